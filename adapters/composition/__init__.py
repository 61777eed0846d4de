"""The composition root: the one place that turns the environment into a running service.

``settings`` reads the common variables and asks the chosen provider's registry entry for its own,
gathering every error into one ``ConfigError``; ``bootstrap`` builds the provider, the snapshot store and
the event store from them. May import every other adapter, ``core`` and ``events``; only the entry points
(and a backend that embeds the service) import from here.
"""
