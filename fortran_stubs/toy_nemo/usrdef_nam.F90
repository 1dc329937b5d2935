MODULE usrdef_nam
   !!======================================================================
   !!                     ***  MODULE  usrdef_nam  ***
   !! toy_nemo :  the user configuration, read from &namusr_def:
   !!             global grid size, grid spacing, layers and physics parameters
   !!======================================================================
   !!   usr_def_nam : read &namusr_def (ref then cfg), check every value
   !!----------------------------------------------------------------------
   !! State owned here (written by usr_def_nam only, read-only elsewhere):
   !!   the namelist entries below
   !!----------------------------------------------------------------------
   USE par_kind, ONLY : wp, lc
   USE lib_mpp , ONLY : lwp, numout, ctl_stop, ctl_nam, nam_open

   IMPLICIT NONE
   PRIVATE

   PUBLIC   usr_def_nam   ! called by nemogcm

   !                                       !!* namusr_def *
   INTEGER , PUBLIC ::   nn_nx     = 64        !: global T points in i, land rim included
   INTEGER , PUBLIC ::   nn_ny     = 64        !: global T points in j, land rim included
   INTEGER , PUBLIC ::   nn_nz     = 2         !: number of isopycnal layers (1 to 100)
   REAL(wp), PUBLIC ::   rn_dx     = 32.e3_wp  !: grid spacing in i  [m]
   REAL(wp), PUBLIC ::   rn_dy     = 32.e3_wp  !: grid spacing in j  [m]
   REAL(wp), PUBLIC ::   rn_htot   = 1000._wp  !: total thickness of the moving layers at rest [m]
   REAL(wp), PUBLIC ::   rn_gprime = 0.02_wp   !: reduced gravity between top layer and abyss [m s-2]
   REAL(wp), PUBLIC ::   rn_rho0   = 1025._wp  !: reference density [kg m-3]
   REAL(wp), PUBLIC ::   rn_f0     = 7.e-5_wp  !: Coriolis parameter at mid-basin [s-1]
   REAL(wp), PUBLIC ::   rn_beta   = 2.e-11_wp !: beta [m-1 s-1]
   REAL(wp), PUBLIC ::   rn_tau0   = 0.05_wp   !: wind stress amplitude [N m-2]
   REAL(wp), PUBLIC ::   rn_tau1   = 0._wp     !: amplitude of the asymmetric mode -tau1 cos(pi y/Ly) [N m-2]
   REAL(wp), PUBLIC ::   rn_hmin   = 50._wp    !: smallest h1 the wind body force divides by [m]
   REAL(wp), PUBLIC ::   rn_rfr    = 1.e-7_wp  !: linear drag on the deepest layer [s-1]
   REAL(wp), PUBLIC ::   rn_ahm    = 0._wp     !: Laplacian viscosity [m2 s-1]
   REAL(wp), PUBLIC ::   rn_bhm    = 5.e11_wp  !: biharmonic viscosity (> 0) [m4 s-1]
   REAL(wp), PUBLIC ::   rn_aeiv   = 0._wp     !: thickness diffusivity (Gent-McWilliams, layer form) [m2 s-1]
   REAL(wp), PUBLIC ::   rn_shlat  = 0._wp     !: lateral condition: 0 free slip, 2 no slip
   REAL(wp), PUBLIC ::   rn_bump   = 0._wp     !: initial Gaussian bump of h1 at mid-basin [m]
   INTEGER , PUBLIC ::   nn_perio  = 0         !: 0 closed basin; 4 (6): cyclic east-west, north fold
   !                                           !: about a T (F) point pivot, NEMO's jperio

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE usr_def_nam
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE usr_def_nam  ***
      !! ** Purpose :   read &namusr_def and refuse wrong values before any step
      !!------------------------------------------------------------------
      INTEGER ::   inum, ios
      CHARACTER(len=lc) ::   cmsg, cval
      NAMELIST/namusr_def/ nn_nx, nn_ny, nn_nz, rn_dx, rn_dy, rn_htot, rn_gprime, rn_rho0,   &
         &                 rn_f0, rn_beta, rn_tau0, rn_tau1, rn_hmin, rn_rfr, rn_ahm, rn_bhm, rn_aeiv, rn_shlat, rn_bump,   &
         &                 nn_perio
      !!------------------------------------------------------------------
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, namusr_def, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namusr_def', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, namusr_def, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namusr_def', 'namelist_cfg', inum )

      IF( nn_nx < 3 ) THEN
         WRITE(cval,'(i0)') nn_nx   ;   CALL refuse( 'nn_nx', cval, 'must be >= 3 (land rim + ocean)' )
      ENDIF
      IF( nn_ny < 3 ) THEN
         WRITE(cval,'(i0)') nn_ny   ;   CALL refuse( 'nn_ny', cval, 'must be >= 3 (land rim + ocean)' )
      ENDIF
      IF( nn_perio /= 0 .AND. nn_perio /= 4 .AND. nn_perio /= 6 ) THEN
         WRITE(cval,'(i0)') nn_perio   ;   CALL refuse( 'nn_perio', cval, 'must be 0, 4 or 6' )
      ENDIF
      IF( nn_perio /= 0 .AND. ( MOD(nn_nx, 2) /= 0 .OR. nn_ny < 6 ) ) THEN
         WRITE(cval,'(i0,a,i0)') nn_nx, ' x ', nn_ny
         CALL refuse( 'nn_nx x nn_ny', cval, 'must be even in i and >= 6 in j with a north fold (nn_perio)' )
      ENDIF
      IF( nn_nz < 1 .OR. nn_nz > 100 ) THEN
         WRITE(cval,'(i0)') nn_nz   ;   CALL refuse( 'nn_nz', cval, 'must be in 1..100' )
      ENDIF
      CALL positive( 'rn_dx'    , rn_dx     )
      CALL positive( 'rn_dy'    , rn_dy     )
      CALL positive( 'rn_htot'  , rn_htot   )
      CALL positive( 'rn_gprime', rn_gprime )
      CALL positive( 'rn_rho0'  , rn_rho0   )
      CALL positive( 'rn_hmin'  , rn_hmin   )
      CALL not_negative( 'rn_tau0', rn_tau0 )
      CALL not_negative( 'rn_rfr' , rn_rfr  )
      CALL not_negative( 'rn_ahm' , rn_ahm  )
      CALL not_negative( 'rn_bhm' , rn_bhm  )
      CALL not_negative( 'rn_aeiv', rn_aeiv )
      IF( rn_shlat < 0._wp .OR. rn_shlat > 2._wp ) THEN
         WRITE(cval,'(g0)') rn_shlat   ;   CALL refuse( 'rn_shlat', cval, 'must be in [0, 2]' )
      ENDIF
      IF( ABS(rn_bump) >= rn_htot / REAL(nn_nz, wp) ) THEN
         WRITE(cval,'(g0)') rn_bump   ;   CALL refuse( 'rn_bump', cval, 'must be smaller than rn_htot/nn_nz' )
      ENDIF

      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'usr_def_nam : user configuration (&namusr_def)'
         WRITE(numout,*) '~~~~~~~~~~~'
         WRITE(numout,'(a,i8)'   ) '   global T points in i (rim incl.)  nn_nx     = ', nn_nx
         WRITE(numout,'(a,i8)'   ) '   global T points in j (rim incl.)  nn_ny     = ', nn_ny
         WRITE(numout,'(a,i8)'   ) '   number of layers                  nn_nz     = ', nn_nz
         WRITE(numout,'(a,es12.4)') '   grid spacing in i [m]             rn_dx     = ', rn_dx
         WRITE(numout,'(a,es12.4)') '   grid spacing in j [m]             rn_dy     = ', rn_dy
         WRITE(numout,'(a,es12.4)') '   total layer thickness [m]         rn_htot   = ', rn_htot
         WRITE(numout,'(a,es12.4)') '   total reduced gravity [m s-2]     rn_gprime = ', rn_gprime
         WRITE(numout,'(a,es12.4)') '   reference density [kg m-3]        rn_rho0   = ', rn_rho0
         WRITE(numout,'(a,es12.4)') '   f at mid-basin [s-1]              rn_f0     = ', rn_f0
         WRITE(numout,'(a,es12.4)') '   beta [m-1 s-1]                    rn_beta   = ', rn_beta
         WRITE(numout,'(a,es12.4)') '   wind stress amplitude [N m-2]     rn_tau0   = ', rn_tau0
         WRITE(numout,'(a,es12.4)') '   asymmetric wind mode [N m-2]      rn_tau1   = ', rn_tau1
         WRITE(numout,'(a,es12.4)') '   min h1 under the wind [m]         rn_hmin   = ', rn_hmin
         WRITE(numout,'(a,es12.4)') '   bottom-layer linear drag [s-1]    rn_rfr    = ', rn_rfr
         WRITE(numout,'(a,es12.4)') '   Laplacian viscosity [m2 s-1]      rn_ahm    = ', rn_ahm
         WRITE(numout,'(a,es12.4)') '   biharmonic viscosity [m4 s-1]     rn_bhm    = ', rn_bhm
         WRITE(numout,'(a,es12.4)') '   thickness diffusivity [m2 s-1]    rn_aeiv   = ', rn_aeiv
         WRITE(numout,'(a,es12.4)') '   lateral slip (0 free, 2 no)       rn_shlat  = ', rn_shlat
         WRITE(numout,'(a,es12.4)') '   initial bump of h1 [m]            rn_bump   = ', rn_bump
         WRITE(numout,'(a,i8)'   ) '   0 closed, 4/6 cyclic + north fold nn_perio  = ', nn_perio
      ENDIF
   END SUBROUTINE usr_def_nam


   SUBROUTINE positive( cdname, pval )
      CHARACTER(len=*), INTENT(in) ::   cdname
      REAL(wp)        , INTENT(in) ::   pval
      CHARACTER(len=lc) ::   cval
      IF( .NOT. pval > 0._wp ) THEN
         WRITE(cval,'(g0)') pval   ;   CALL refuse( cdname, cval, 'must be > 0' )
      ENDIF
   END SUBROUTINE positive


   SUBROUTINE not_negative( cdname, pval )
      CHARACTER(len=*), INTENT(in) ::   cdname
      REAL(wp)        , INTENT(in) ::   pval
      CHARACTER(len=lc) ::   cval
      IF( .NOT. pval >= 0._wp ) THEN
         WRITE(cval,'(g0)') pval   ;   CALL refuse( cdname, cval, 'must be >= 0' )
      ENDIF
   END SUBROUTINE not_negative


   SUBROUTINE refuse( cdname, cdval, cdwhy )
      CHARACTER(len=*), INTENT(in) ::   cdname, cdval, cdwhy
      CALL ctl_stop( 'namusr_def: '//TRIM(cdname)//' = '//TRIM(cdval)//' '//TRIM(cdwhy), ld_all=.TRUE. )
   END SUBROUTINE refuse

   !!======================================================================
END MODULE usrdef_nam
