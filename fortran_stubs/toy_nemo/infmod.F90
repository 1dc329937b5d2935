MODULE infmod
   !!======================================================================
   !!                       ***  MODULE  infmod  ***
   !! toy_nemo :  the coupling hook to external (machine-learned) closures,
   !!             in the style of NEMO's infmod
   !!======================================================================
   !!   inf_init  : read &nammlb; (coupled) define grid and fields
   !!   inf_put   : early in the step, hand u, v, h of step kt to the closures
   !!   inf_get   : late in the step, receive u_tend, v_tend, h_tend for step kt
   !!   inf_final : end of the run
   !!----------------------------------------------------------------------
   !! The step adds the tendencies by forward Euler after the AB3 update:
   !!    u(n+1) = u(n) + dt * AB3(...) + dt * u_tend      (same for v, h)
   !! Units: u_tend, v_tend [m s-2], h_tend [m s-1]. Without coupling
   !! (ln_mlb = .false.) they are zero. The coupling library (module mlbridge)
   !! plugs in here and nowhere else: inf_init gets the local box and the masks,
   !! inf_put sends, inf_get receives; the rest of the model does not change.
   !!----------------------------------------------------------------------
   USE par_kind, ONLY : wp, lc
   USE lib_mpp , ONLY : lwp, numout, ctl_stop, ctl_nam, nam_open

   IMPLICIT NONE
   PRIVATE

   PUBLIC   inf_init    ! called by nemogcm
   PUBLIC   inf_put     ! called by step (early)
   PUBLIC   inf_get     ! called by step (late)
   PUBLIC   inf_final   ! called by nemogcm

   !                                    !!* nammlb *
   LOGICAL, PUBLIC ::   ln_mlb = .FALSE.   !: exchange fields with the mlbridge servers

   INTEGER ::   nkt_put = -1               ! step of the last inf_put (inf_get must match it)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE inf_init
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_init  ***
      !! ** Purpose :   read &nammlb (ref then cfg)
      !!------------------------------------------------------------------
      INTEGER ::   inum, ios
      CHARACTER(len=lc) ::   cmsg
      NAMELIST/nammlb/ ln_mlb
      !!------------------------------------------------------------------
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, nammlb, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'nammlb', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, nammlb, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'nammlb', 'namelist_cfg', inum )
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'inf_init : coupling hook (&nammlb)'
         WRITE(numout,*) '~~~~~~~~'
         WRITE(numout,'(a,l2)') '   exchange with mlbridge servers   ln_mlb = ', ln_mlb
      ENDIF
      IF( ln_mlb )   CALL ctl_stop( 'nammlb: ln_mlb = .true. but this toy_nemo is built without '   &
         &                          //'the mlbridge coupling library', ld_all=.TRUE. )
   END SUBROUTINE inf_init


   SUBROUTINE inf_put( kt, pu, pv, ph )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_put  ***
      !! ** Purpose :   send the fields of step kt (halo included) to the closures
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in) ::   kt           ! time step
      REAL(wp), DIMENSION(:,:,:), INTENT(in) ::   pu, pv, ph   ! u, v, h (jpi, jpj, jpk)
      !!------------------------------------------------------------------
      IF( ANY( SHAPE(pu) /= SHAPE(ph) ) .OR. ANY( SHAPE(pv) /= SHAPE(ph) ) )   &
         &   CALL ctl_stop( 'inf_put: u, v and h must have the same (jpi, jpj, jpk) shape' )
      nkt_put = kt
      IF( .NOT. ln_mlb )   RETURN
      ! coupled: mlbridge put of u, v, h (non-blocking) goes here
   END SUBROUTINE inf_put


   SUBROUTINE inf_get( kt, pu_tend, pv_tend, ph_tend )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_get  ***
      !! ** Purpose :   external tendencies of step kt (zero without coupling)
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in ) ::   kt                          ! time step
      REAL(wp), DIMENSION(:,:,:), INTENT(out) ::   pu_tend, pv_tend, ph_tend   ! [m s-2], [m s-2], [m s-1]
      CHARACTER(len=lc) ::   cmsg
      !!------------------------------------------------------------------
      IF( kt /= nkt_put ) THEN
         WRITE(cmsg,'(a,i0,a,i0)') 'inf_get: called at step ', kt, ' but the last inf_put was at step ', nkt_put
         CALL ctl_stop( cmsg )
      ENDIF
      pu_tend(:,:,:) = 0._wp   ! no closure: no external tendency
      pv_tend(:,:,:) = 0._wp
      ph_tend(:,:,:) = 0._wp
      IF( .NOT. ln_mlb )   RETURN
      ! coupled: mlbridge get of the closure outputs into pu_tend, pv_tend, ph_tend goes here
   END SUBROUTINE inf_get


   SUBROUTINE inf_final
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_final  ***
      !! ** Purpose :   end the exchanges (nothing to do without coupling)
      !!------------------------------------------------------------------
      IF( .NOT. ln_mlb )   RETURN
   END SUBROUTINE inf_final

   !!======================================================================
END MODULE infmod
