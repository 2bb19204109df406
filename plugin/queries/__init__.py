"""The read model: what the API, the reports, the notes and the exports ask of the database, defined once."""
