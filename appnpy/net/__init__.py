"""
The network services: the topology database, route selection by class of
service, the directory, intermediate session routing (the relay), peer
exchange and admission control, and the one rate limiter they share.
"""
