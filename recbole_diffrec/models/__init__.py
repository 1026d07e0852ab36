"""Recommender models of the plugin."""
