import sys

from bridge.server.main import main

sys.exit(main())
