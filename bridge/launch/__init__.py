"""``mlbridge build`` and ``mlbridge run``: the Fortran build, checks, run directory, the job."""
