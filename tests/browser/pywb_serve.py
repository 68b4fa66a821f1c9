"""Serve pywb's collections from the current folder on 127.0.0.1, on a port the kernel picks;
print `port N` on stdout and serve until killed.

Run by the python of pywb's own virtualenv (`make pywb`, .venv-pywb), never the project's:
pywb pins redis<3, which Prefect cannot share a virtualenv with. `wayback -p 0` would bind
port 0 too but never says which port it got, and it listens on 0.0.0.0 by default.
"""

from gevent.monkey import patch_all

patch_all()

import sys  # noqa: E402

from pywb.apps.frontendapp import FrontEndApp  # noqa: E402
from pywb.utils.geventserver import GeventServer, RequestURIWSGIHandler  # noqa: E402


def main() -> None:
    server = GeventServer(FrontEndApp(), port=0, hostname="127.0.0.1",
                          handler_class=RequestURIWSGIHandler)  # serves in a greenlet
    print(f"port {server.port}", flush=True)
    assert server.ge is not None
    server.ge.join()


if __name__ == "__main__":
    sys.exit(main())
