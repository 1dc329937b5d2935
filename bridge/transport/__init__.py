"""Transports: how fields move between the model ranks and the inference servers.

``bridge.transport.mpi`` is the wire protocol over ``MPI_COMM_WORLD`` split by colour (the default
transport, matching the Fortran ``mlbridge`` module). Nothing is imported here: ``mpi4py``
initialises MPI when imported, so each module is imported only where it is used.
"""
