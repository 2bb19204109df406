"""Marshmallow schemas for the API, the pages and the exports: what comes in is loaded here, what goes out dumped here."""
