"""One locustfile per scenario; ``loadtests.scenarios`` says which file each scenario runs.

These modules import Locust (and so gevent's monkey-patching): only Locust loads them.
"""
