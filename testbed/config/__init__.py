"""A topology, loaded: the schema, loading (files, profiles, --set overrides), cross-field checks, bounds, variants.

It imports neither Ray nor torch, so a topology is checked in seconds before anything starts.
"""
