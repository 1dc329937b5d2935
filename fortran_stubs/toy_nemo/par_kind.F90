MODULE par_kind
   !!======================================================================
   !!                       ***  MODULE  par_kind  ***
   !! toy_nemo :  kinds and string lengths used by every other module
   !!======================================================================
   USE, INTRINSIC :: iso_fortran_env, ONLY : real64

   IMPLICIT NONE
   PRIVATE

   INTEGER, PUBLIC, PARAMETER ::   wp = real64   !: working precision of every real (all modules)
   INTEGER, PUBLIC, PARAMETER ::   lc = 256      !: length of file names and messages (all modules)

   !!======================================================================
END MODULE par_kind
