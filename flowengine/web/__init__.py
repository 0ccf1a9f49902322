"""The HTTP server: OpenAI-compatible chat completions, a REST + server-sent-events API for
applications, and the web page's static files."""
