"""Deployments and the catalogue: what a deployment is (local or remote), names, aliases,
routes, capabilities and circuit breakers, and how the catalogue is built from the settings and
the model store. Below both routing and the scheduler."""
