"""Request and answer mapper functions, looked up by name from config.yaml.

Every public function defined in a module of this package is a mapper named after itself.
A mapper is called as `mapper(payload, endpoint)` or, when it accepts a third argument,
`mapper(payload, endpoint, context)` (see mooltiproxy/serving/context.py), and returns the new payload.
"""
