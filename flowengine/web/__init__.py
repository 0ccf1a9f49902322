"""The web layer: the HTTP server and the HTML views of runs (reports and the web UI)."""
