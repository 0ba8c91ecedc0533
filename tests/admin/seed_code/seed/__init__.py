"""The task package ``manage.py pynenc_seed`` rows name, for tests that need it importable.

Only on ``sys.path`` while a test asks for it (``tests/admin/test_actions.py``'s
``seed_tasks`` fixture): a project whose tasks exist, as in a real deployment.
"""
