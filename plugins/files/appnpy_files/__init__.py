"""
The files session plugin: shares, an index, search and verified downloads.
"""
