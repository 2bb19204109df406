"""The database's fast paths and coordination: bulk writes (``bulk``) and leases (``leases``)."""
