"""
Operations: the configuration file, the data-directory lock, the management
API and its web page, Prometheus metrics, plugins' operator extensions and
the interop probe.  (The C{appn} command-line client, which builds a prober
node, is at the top: L{appnpy.cli}.)
"""
