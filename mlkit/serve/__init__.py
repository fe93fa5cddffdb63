"""`mlkit models serve`: MLflow's scoring protocol on uvicorn + Starlette, following a registry alias.

Imported only by that command (the web stack and prometheus-client never load for `mlkit --help`
or `mlkit run`). Modules: `protocol` (payloads and error answers, as MLflow's scoring server),
`holder` (the loaded version, alias following, warm-up and swap), `batching` (the forward passes),
`metrics` (/metrics), `app` (the routes), `record` (the serving run), `server` (options, GPU lease,
uvicorn, drain, --workers).
"""
