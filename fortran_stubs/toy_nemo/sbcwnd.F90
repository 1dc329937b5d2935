MODULE sbcwnd
   !!======================================================================
   !!                       ***  MODULE  sbcwnd  ***
   !! toy_nemo :  steady double-gyre wind stress at U points
   !!             tau_x = -tau0 cos(2 pi y / Ly) [ - tau1 cos(pi y / Ly) ], tau_y = 0
   !!             (the tau1 mode, off by default, adds anticyclonic curl everywhere:
   !!             it moves the line between the gyres north, a twin truth's wind error)
   !!======================================================================
   !!   sbc_init : compute utau once (the forcing is steady)
   !!----------------------------------------------------------------------
   !! State owned here (written by sbc_init only): utau
   !!----------------------------------------------------------------------
   USE par_kind  , ONLY : wp
   USE lib_mpp   , ONLY : lwp, numout
   USE mppini    , ONLY : jpi, jpj
   USE domain    , ONLY : gphiu, umask, rLy
   USE usrdef_nam, ONLY : rn_tau0, rn_tau1

   IMPLICIT NONE
   PRIVATE

   PUBLIC   sbc_init   ! called by nemogcm

   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   utau   !: zonal wind stress at U points [N m-2]

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE sbc_init
      INTEGER ::   ji, jj
      REAL(wp), PARAMETER ::   rpi = 3.141592653589793238_wp
      ALLOCATE( utau(jpi,jpj) )
      DO jj = 1, jpj
         DO ji = 1, jpi
            utau(ji,jj) = - rn_tau0 * COS( 2._wp * rpi * gphiu(ji,jj) / rLy ) * umask(ji,jj)
         END DO
      END DO
      IF( ABS(rn_tau1) > 0._wp ) THEN   ! only then: the default wind stays bit for bit what it was
         DO jj = 1, jpj
            DO ji = 1, jpi
               utau(ji,jj) = utau(ji,jj) - rn_tau1 * COS( rpi * gphiu(ji,jj) / rLy ) * umask(ji,jj)
            END DO
         END DO
      ENDIF
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'sbc_init : double-gyre wind stress tau_x = -tau0 cos(2 pi y/Ly)'
         IF( ABS(rn_tau1) > 0._wp )   WRITE(numout,*) '           - tau1 cos(pi y/Ly), tau1 = ', rn_tau1
         WRITE(numout,*) '~~~~~~~~'
      ENDIF
   END SUBROUTINE sbc_init

   !!======================================================================
END MODULE sbcwnd
