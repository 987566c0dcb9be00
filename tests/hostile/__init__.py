"""
Hostile nodes for the tests: nodes that speak the real protocol, with real keys
and real signatures, and lie in what they say.  One module per layer attacked;
each builds on the public harness (L{appnpy.testing}).
"""
