"""
Operations: the configuration file, the data-directory lock, the management
API and its web page, Prometheus metrics, the interop probe and the C{appn}
command-line client.
"""
