"""
Tests of the files plugin.
"""
