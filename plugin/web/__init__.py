"""The web side: blueprints for the health check, the API and (later) the dashboard."""
