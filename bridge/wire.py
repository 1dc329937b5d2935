"""The wire constants shared by the Fortran ``mlbridge`` library and the Python servers.

Mirrored in the Fortran library (``fortran_stubs/mlbridge``); ``tests/test_wire_constants.py``
pins the two together. The messages they name are described in :mod:`bridge.transport.mpi`.
"""

from __future__ import annotations

COLOUR_MODEL = 1
COLOUR_SERVER = 2
PROTOCOL_VERSION = 2  # 2: one FIELDS message per (field, server)

TAG_REPORT = 7101
TAG_MASK = 7102
TAG_REPLY = 7103
TAG_REPLY_TEXT = 7104
TAG_FIELDS = 7201
TAG_DONE = 7202
TAG_OUTPUTS = 7203
TAG_ERROR = 7204

DONE_LENGTH = 4  # reals in the goodbye message
# transport mpi: the goodbye goes on with [n, n records of STEPLOG_RECORD reals], the model's
# timeline: [kt, put start, put end, get start, get end, wait s] (monotonic clock seconds)
STEPLOG_RECORD = 6
JOIN_MAGIC = 7_100_001  # both sides all-reduce [JOIN_MAGIC, -JOIN_MAGIC] before the world split
DEFAULT_JOIN_TIMEOUT_S = 600.0  # mlb_init waits as long by default
