"""The backend's side of the model-API gateway: ``state`` writes what the gateway reads (its upstream and
the sandboxes' tokens) and is what providers and `sandboxctl gateway` call. The gateway program itself is
part of the egress package (``adapters/egress/gateway.py``), which runs inside the egress container on the
standard library alone; this package may import that package's token and route helpers and the settings,
never the other way round."""
