PROGRAM toy_nemo
   !!======================================================================
   !!                       ***  PROGRAM toy_nemo  ***
   !! toy_nemo :  a NEMO-like N-layer reduced-gravity double-gyre ocean.
   !!             No arguments: reads namelist_ref and namelist_cfg in the
   !!             current directory, writes ocean.output, time.step,
   !!             <cn_exp>_grid.nc and restart files there.
   !!======================================================================
   USE nemogcm, ONLY : nemo_gcm
   IMPLICIT NONE
   CALL nemo_gcm
END PROGRAM toy_nemo
