"""Small app modules that the acceptance tests run in real worker processes.

The tests put ``tests/acceptance`` on the workers' ``PYTHONPATH`` and start them as
``python -m durableflow.cli worker apps.<module>:flow``. The test process imports the
same modules and calls their ``build_flow(database_url)`` to get a client ``Flow`` with
the same workflows registered (so it can start runs and decode results).
"""
