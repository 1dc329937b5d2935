MODULE domain
   !!======================================================================
   !!                       ***  MODULE  domain  ***
   !! toy_nemo :  the Arakawa C-grid of a closed beta-plane basin:
   !!             time step (&namdom), scale factors and coordinates (domhgr),
   !!             land masks (dommsk) and the Coriolis parameter
   !!======================================================================
   !!   dom_init  : read &namdom, build grid, masks and Coriolis for the local domain
   !!----------------------------------------------------------------------
   !! NEMO conventions: T(i,j) cell centre, u(i,j) on the east face of T(i,j),
   !! v(i,j) on its north face, f(i,j) at its north-east corner. The global
   !! grid (jpiglo x jpjglo T points) has a 1-point land rim all round.
   !! The layers are isopycnal with no topography, so every layer shares
   !! the same horizontal masks (2D arrays).
   !!
   !! State owned here (written by dom_init only, read-only elsewhere).
   !!----------------------------------------------------------------------
   USE par_kind  , ONLY : wp, lc
   USE lib_mpp   , ONLY : lwp, numout, ctl_stop, ctl_nam, nam_open
   USE mppini    , ONLY : jpi, jpj, jpiglo, jpjglo, nimpp, njmpp, jperio
   USE usrdef_nam, ONLY : rn_dx, rn_dy, rn_f0, rn_beta, rn_shlat

   IMPLICIT NONE
   PRIVATE

   PUBLIC   dom_init   ! called by nemogcm

   REAL(wp), PUBLIC ::   rn_Dt = 1440._wp   !: time step [s] (&namdom)

   !                                                  !!* scale factors [m] and their inverses
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   e1t, e2t, e1u, e2u, e1v, e2v, e1f, e2f
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   e1e2t, r1_e1e2t, r1_e1e2f
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   r1_e1u, r1_e2u, r1_e1v, r1_e2v
   !                                                  !!* positions [m] from the south-west wall
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   glamt, gphit, glamu, gphiu, glamv, gphiv, glamf, gphif
   !                                                  !!* land masks (1 ocean, 0 land)
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   tmask, umask, vmask
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   fmask    !: 1 ocean, rn_shlat on the coast, 0 land
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   r1_nf    !: 1 / number of ocean T points around f (0 if none)
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   rland_f  !: 1 where no ocean T point touches f, else 0
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:) ::   ff_f     !: Coriolis parameter at f points [s-1]
   REAL(wp), PUBLIC ::   rLx, rLy                              !: ocean basin size [m]

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE dom_init
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE dom_init  ***
      !! ** Purpose :   read &namdom; grid, masks and Coriolis on the local domain
      !!                (halo included, computed from global indices: no exchange)
      !!------------------------------------------------------------------
      INTEGER ::   inum, ios, ji, jj, ig, jg
      REAL(wp) ::   zn
      CHARACTER(len=lc) ::   cmsg
      NAMELIST/namdom/ rn_Dt
      !!------------------------------------------------------------------
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, namdom, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namdom', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, namdom, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namdom', 'namelist_cfg', inum )
      IF( .NOT. rn_Dt > 0._wp ) THEN
         WRITE(cmsg,'(a,g0,a)') 'namdom: rn_Dt = ', rn_Dt, ' must be > 0 (time step in s)'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF

      ALLOCATE( e1t(jpi,jpj), e2t(jpi,jpj), e1u(jpi,jpj), e2u(jpi,jpj), e1v(jpi,jpj), e2v(jpi,jpj),   &
         &      e1f(jpi,jpj), e2f(jpi,jpj), e1e2t(jpi,jpj), r1_e1e2t(jpi,jpj), r1_e1e2f(jpi,jpj),     &
         &      r1_e1u(jpi,jpj), r1_e2u(jpi,jpj), r1_e1v(jpi,jpj), r1_e2v(jpi,jpj) )
      ALLOCATE( glamt(jpi,jpj), gphit(jpi,jpj), glamu(jpi,jpj), gphiu(jpi,jpj),   &
         &      glamv(jpi,jpj), gphiv(jpi,jpj), glamf(jpi,jpj), gphif(jpi,jpj) )
      ALLOCATE( tmask(jpi,jpj), umask(jpi,jpj), vmask(jpi,jpj), fmask(jpi,jpj),   &
         &      r1_nf(jpi,jpj), rland_f(jpi,jpj), ff_f(jpi,jpj) )

      ! --- domhgr: uniform spacing, carried as arrays like a curvilinear grid --- !
      e1t(:,:) = rn_dx   ;   e1u(:,:) = rn_dx   ;   e1v(:,:) = rn_dx   ;   e1f(:,:) = rn_dx
      e2t(:,:) = rn_dy   ;   e2u(:,:) = rn_dy   ;   e2v(:,:) = rn_dy   ;   e2f(:,:) = rn_dy
      e1e2t   (:,:) = e1t(:,:) * e2t(:,:)
      r1_e1e2t(:,:) = 1._wp / e1e2t(:,:)
      r1_e1e2f(:,:) = 1._wp / ( e1f(:,:) * e2f(:,:) )
      r1_e1u(:,:) = 1._wp / e1u(:,:)   ;   r1_e2u(:,:) = 1._wp / e2u(:,:)
      r1_e1v(:,:) = 1._wp / e1v(:,:)   ;   r1_e2v(:,:) = 1._wp / e2v(:,:)
      rLx = REAL(jpiglo - 2, wp) * rn_dx
      rLy = REAL(jpjglo - 2, wp) * rn_dy
      DO jj = 1, jpj
         jg = njmpp + jj - 2
         DO ji = 1, jpi
            ig = nimpp + ji - 2
            glamt(ji,jj) = ( REAL(ig, wp) - 1.5_wp ) * rn_dx   ;   gphit(ji,jj) = ( REAL(jg, wp) - 1.5_wp ) * rn_dy
            glamu(ji,jj) = ( REAL(ig, wp) - 1.0_wp ) * rn_dx   ;   gphiu(ji,jj) = gphit(ji,jj)
            glamv(ji,jj) = glamt(ji,jj)                        ;   gphiv(ji,jj) = ( REAL(jg, wp) - 1.0_wp ) * rn_dy
            glamf(ji,jj) = glamu(ji,jj)                        ;   gphif(ji,jj) = gphiv(ji,jj)
            ff_f(ji,jj) = rn_f0 + rn_beta * ( gphif(ji,jj) - 0.5_wp * rLy )
         END DO
      END DO

      ! --- dommsk: closed basin, 1-point land rim; lateral condition through fmask --- !
      DO jj = 1, jpj
         jg = njmpp + jj - 2
         DO ji = 1, jpi
            ig = nimpp + ji - 2
            tmask(ji,jj) = tglo( ig, jg )
            umask(ji,jj) = tglo( ig, jg ) * tglo( ig+1, jg   )
            vmask(ji,jj) = tglo( ig, jg ) * tglo( ig  , jg+1 )
            fmask(ji,jj) = tglo( ig, jg ) * tglo( ig+1, jg ) * tglo( ig, jg+1 ) * tglo( ig+1, jg+1 )
            ! coastal f point: land corner touching an ocean velocity point gets rn_shlat
            ! (0: free slip, zero vorticity; 2: no slip, mirrored tangential velocity)
            IF( fmask(ji,jj) < 0.5_wp ) THEN
               IF(  tglo(ig,jg  ) * tglo(ig+1,jg  ) + tglo(ig,jg+1) * tglo(ig+1,jg+1)           &
                  & + tglo(ig,jg  ) * tglo(ig  ,jg+1) + tglo(ig+1,jg) * tglo(ig+1,jg+1) > 0.5_wp )  &
                  &   fmask(ji,jj) = rn_shlat
            ENDIF
            zn = tglo( ig, jg ) + tglo( ig+1, jg ) + tglo( ig, jg+1 ) + tglo( ig+1, jg+1 )
            IF( zn > 0.5_wp ) THEN
               r1_nf(ji,jj) = 1._wp / zn   ;   rland_f(ji,jj) = 0._wp
            ELSE
               r1_nf(ji,jj) = 0._wp        ;   rland_f(ji,jj) = 1._wp
            ENDIF
         END DO
      END DO

      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'dom_init : C-grid closed basin (&namdom)'
         WRITE(numout,*) '~~~~~~~~'
         WRITE(numout,'(a,es12.4)') '   time step [s]                 rn_Dt = ', rn_Dt
         WRITE(numout,'(a,2es12.4)') '   ocean basin size Lx, Ly [m]        = ', rLx, rLy
         WRITE(numout,'(a,l2)') '   no-slip (rn_shlat > 0)              = ', rn_shlat > 0._wp
      ENDIF

   CONTAINS

      PURE FUNCTION tglo( kig, kjg ) RESULT( pmsk )
         !! T mask of the global point (kig, kjg): ocean inside the rim; with a north fold
         !! (jperio 4, 6) ocean north of the southern rim row, in every column and beyond
         !! the fold (its mirror is ocean: no land at the fold)
         INTEGER, INTENT(in) ::   kig, kjg
         REAL(wp) ::   pmsk
         pmsk = 0._wp
         IF( jperio /= 0 ) THEN
            IF( kjg >= 2 )   pmsk = 1._wp
         ELSEIF( kig >= 2 .AND. kig <= jpiglo - 1 .AND. kjg >= 2 .AND. kjg <= jpjglo - 1 ) THEN
            pmsk = 1._wp
         ENDIF
      END FUNCTION tglo

   END SUBROUTINE dom_init

   !!======================================================================
END MODULE domain
