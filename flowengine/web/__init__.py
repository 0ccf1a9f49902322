"""The web layer: `flowengine serve` (OpenAI-compatible chat completions, a REST and
server-sent-events API for applications, the web page's static files) and the HTML views of
runs (self-contained reports, and the pages the server shows)."""
