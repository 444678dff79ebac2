"""The surfaces of ``Flow``: each module holds one family of its public methods.

``Flow`` (in ``durableflow.flow``) is assembled from these classes so that the facade
stays small and every surface lives in a module named after what it owns. Each
surface derives from ``FlowCore``, which holds the state they share.
"""
