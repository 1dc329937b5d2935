MODULE rst
   !!======================================================================
   !!                         ***  MODULE  rst  ***
   !! toy_nemo :  restart files: one global NetCDF file written by rank 0,
   !!             read back on any decomposition, bit for bit
   !!======================================================================
   !!   rst_write : <cn_ocerst_outdir>/<cn_exp>_<kt:08d>_restart.nc after step kt
   !!   rst_read  : state, AB3 history and kt from cn_ocerst_in
   !!----------------------------------------------------------------------
   !! Contents: kt, nab (AB3 tendencies held, 0..2), rn_Dt, u, v, h and the
   !! tendencies of steps kt (ua_b1, va_b1, ha_b1) and kt-1 (ua_b2, ...).
   !! When a closure runs (coupled or in process), the coupling's state too
   !! (infmod: inf_rst_info, inf_rst_get): mlb_origin, mlb_every, mlb_lag and
   !! per received field the outputs held between exchanges (mlb_held_u_tend,
   !! ...) and, with lag 1, those in flight (mlb_pending_u_tend, ...).
   !! With &namnudge ln_nudge, the nudging tendency of step kt (nud_last_u,
   !! nud_last_v, nud_last_h): the restarted run sends it as the run in one go
   !! does (u_nud, v_nud, h_nud, a target of online training).
   !!----------------------------------------------------------------------
   USE netcdf
   USE par_kind      , ONLY : wp, lc
   USE lib_mpp       , ONLY : lwp, numout, ctl_stop
   USE mppini        , ONLY : jpi, jpj, jpiglo, jpjglo, nimpp, njmpp
   USE domain        , ONLY : rn_Dt
   USE oce           , ONLY : jpk, un, vn, hn, uta, vta, hta, nnow, nm1, nm2, nab
   USE iom           , ONLY : iom_gather, iom_check
   USE lbclnk        , ONLY : lbc_lnk
   USE in_out_manager, ONLY : cn_exp, cn_ocerst_in, cn_ocerst_outdir, nn_it000
   USE infmod        , ONLY : jpfld, inf_rst_info, inf_rst_get, inf_rst_name, inf_rst_set_schedule, inf_rst_set
   USE nudging       , ONLY : ln_nudge, nud_last, nud_rst_set

   IMPLICIT NONE
   PRIVATE

   PUBLIC   rst_write   ! called by step
   PUBLIC   rst_read    ! called by nemogcm

   INTEGER, PARAMETER ::   jpvar = 9
   CHARACTER(len=5), PARAMETER, DIMENSION(jpvar) ::   cvar = [ 'u    ', 'v    ', 'h    ',   &
      &                                                        'ua_b1', 'va_b1', 'ha_b1',   &
      &                                                        'ua_b2', 'va_b2', 'ha_b2' ]
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zglo   ! one global field (rank 0)
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zloc   ! one local field (the coupling's outputs)
   CHARACTER(len=6), PARAMETER, DIMENSION(3) ::   cmlb = [ 'origin', 'every ', 'lag   ' ]
   CHARACTER(len=10), PARAMETER, DIMENSION(3) ::   cnud = [ 'nud_last_u', 'nud_last_v', 'nud_last_h' ]

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE rst_write( kt )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE rst_write  ***
      !! ** Purpose :   write the restart of the end of step kt (collective)
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kt   ! time step just completed
      INTEGER ::   ncid, idx, idy, idz, ikt, inab, idt, jv, jf, js
      INTEGER, DIMENSION(jpvar) ::   idv
      INTEGER, DIMENSION(3)     ::   imlb, idmlb      ! the coupling's schedule: origin, every, lag
      INTEGER, DIMENSION(jpfld,2) ::   idslot          ! its outputs: (u_tend, v_tend, h_tend) x (held, pending)
      INTEGER, DIMENSION(3)     ::   idnud            ! the nudging tendency of step kt (ln_nudge)
      LOGICAL ::   llmlb
      LOGICAL, DIMENSION(jpfld,2) ::   llslot
      CHARACTER(len=lc) ::   cfile
      !!------------------------------------------------------------------
      IF( .NOT. ALLOCATED(zglo) ) THEN
         IF( lwp ) THEN   ;   ALLOCATE( zglo(jpiglo,jpjglo,jpk) )
         ELSE             ;   ALLOCATE( zglo(1,1,1) )
         ENDIF
      ENDIF
      IF( .NOT. ALLOCATED(zloc) )   ALLOCATE( zloc(jpi,jpj,jpk) )
      CALL inf_rst_info( llmlb, imlb(1), imlb(2), imlb(3), llslot )
      WRITE(cfile,'(a,"/",a,"_",i8.8,"_restart.nc")') TRIM(cn_ocerst_outdir), TRIM(cn_exp), kt
      ncid = -1
      IF( lwp ) THEN
         CALL iom_check( nf90_create( cfile, IOR(NF90_CLOBBER, NF90_64BIT_OFFSET), ncid ),   &
            &            'rst_write: create '//TRIM(cfile) )
         CALL chk( nf90_def_dim( ncid, 'x', jpiglo, idx ) )
         CALL chk( nf90_def_dim( ncid, 'y', jpjglo, idy ) )
         CALL chk( nf90_def_dim( ncid, 'z', jpk, idz ) )
         CALL chk( nf90_def_var( ncid, 'kt' , NF90_INT, ikt ) )
         CALL chk( nf90_def_var( ncid, 'nab', NF90_INT, inab ) )
         CALL chk( nf90_def_var( ncid, 'rn_Dt', NF90_DOUBLE, idt ) )
         DO jv = 1, jpvar
            CALL chk( nf90_def_var( ncid, TRIM(cvar(jv)), NF90_DOUBLE, [idx, idy, idz], idv(jv) ) )
         END DO
         IF( llmlb ) THEN
            DO jv = 1, 3
               CALL chk( nf90_def_var( ncid, 'mlb_'//TRIM(cmlb(jv)), NF90_INT, idmlb(jv) ) )
            END DO
            CALL chk( nf90_put_att( ncid, idmlb(1), 'long_name',   &
               &      'coupling: exchanges on the steps kt where mod(kt - mlb_origin, mlb_every) = 0' ) )
            DO js = 1, 2
               DO jf = 1, jpfld
                  IF( .NOT. llslot(jf,js) )   CYCLE
                  CALL chk( nf90_def_var( ncid, TRIM(inf_rst_name(jf, js)), NF90_DOUBLE, [idx, idy, idz],   &
                     &                    idslot(jf,js) ) )
                  IF( js == 1 ) THEN
                     CALL chk( nf90_put_att( ncid, idslot(jf,js), 'long_name',   &
                        &                    'coupling: outputs used until the next exchange' ) )
                  ELSE
                     CALL chk( nf90_put_att( ncid, idslot(jf,js), 'long_name',   &
                        &                    'coupling: outputs in flight, used from the next exchange' ) )
                  ENDIF
               END DO
            END DO
         ENDIF
         IF( ln_nudge ) THEN
            DO jv = 1, 3
               CALL chk( nf90_def_var( ncid, TRIM(cnud(jv)), NF90_DOUBLE, [idx, idy, idz], idnud(jv) ) )
            END DO
         ENDIF
         CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'title', 'toy_nemo restart: '//TRIM(cn_exp) ) )
         CALL chk( nf90_enddef( ncid ) )
         CALL chk( nf90_put_var( ncid, ikt, kt ) )
         CALL chk( nf90_put_var( ncid, inab, nab ) )
         CALL chk( nf90_put_var( ncid, idt, rn_Dt ) )
      ENDIF
      DO jv = 1, jpvar
         SELECT CASE( jv )
         CASE( 1 )   ;   CALL iom_gather( jpk, un, zglo )
         CASE( 2 )   ;   CALL iom_gather( jpk, vn, zglo )
         CASE( 3 )   ;   CALL iom_gather( jpk, hn, zglo )
         CASE( 4 )   ;   CALL iom_gather( jpk, uta(:,:,:,nm1), zglo )
         CASE( 5 )   ;   CALL iom_gather( jpk, vta(:,:,:,nm1), zglo )
         CASE( 6 )   ;   CALL iom_gather( jpk, hta(:,:,:,nm1), zglo )
         CASE( 7 )   ;   CALL iom_gather( jpk, uta(:,:,:,nm2), zglo )
         CASE( 8 )   ;   CALL iom_gather( jpk, vta(:,:,:,nm2), zglo )
         CASE( 9 )   ;   CALL iom_gather( jpk, hta(:,:,:,nm2), zglo )
         END SELECT
         IF( lwp )   CALL chk( nf90_put_var( ncid, idv(jv), zglo ) )
      END DO
      IF( ln_nudge ) THEN
         DO jv = 1, 3
            CALL nud_last( jv, zloc )
            CALL iom_gather( jpk, zloc, zglo )
            IF( lwp )   CALL chk( nf90_put_var( ncid, idnud(jv), zglo ) )
         END DO
      ENDIF
      IF( llmlb ) THEN
         IF( lwp ) THEN
            DO jv = 1, 3
               CALL chk( nf90_put_var( ncid, idmlb(jv), imlb(jv) ) )
            END DO
         ENDIF
         DO js = 1, 2
            DO jf = 1, jpfld
               IF( .NOT. llslot(jf,js) )   CYCLE
               CALL inf_rst_get( jf, js, zloc )   ! with lag 1 the pending outputs are waited for here
               CALL iom_gather( jpk, zloc, zglo )
               IF( lwp )   CALL chk( nf90_put_var( ncid, idslot(jf,js), zglo ) )
            END DO
         END DO
      ENDIF
      IF( lwp ) THEN
         CALL chk( nf90_close( ncid ) )
         WRITE(numout,'(a,i10,a,a)') ' rst_write : step ', kt, ' restart written in ', TRIM(cfile)
      ENDIF

   CONTAINS

      SUBROUTINE chk( kstatus )
         INTEGER, INTENT(in) ::   kstatus
         CALL iom_check( kstatus, 'rst_write: write '//TRIM(cfile) )
      END SUBROUTINE chk

   END SUBROUTINE rst_write


   SUBROUTINE rst_read
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE rst_read  ***
      !! ** Purpose :   read the state of a restart on every rank (own box only),
      !!                check it matches this run, fill the halos
      !!------------------------------------------------------------------
      INTEGER ::   ncid, idim, ilen, ivar, ikt, jv, jf, js
      INTEGER, DIMENSION(3) ::   iglo, imlb
      REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zwrk   ! one saved output of the coupling
      REAL(wp) ::   zdt
      CHARACTER(len=lc) ::   cfile, cmsg
      CHARACTER(len=1), DIMENSION(3), PARAMETER ::   cdim = [ 'x', 'y', 'z' ]
      !!------------------------------------------------------------------
      cfile = cn_ocerst_in
      ilen = LEN_TRIM(cfile)
      IF( ilen < 3 ) THEN
         cfile = TRIM(cfile)//'.nc'
      ELSEIF( cfile(ilen-2:ilen) /= '.nc' ) THEN
         cfile = TRIM(cfile)//'.nc'
      ENDIF
      CALL iom_check( nf90_open( cfile, NF90_NOWRITE, ncid ),   &
         &            'rst_read: namrun cn_ocerst_in: cannot open '//TRIM(cfile), ld_all=.TRUE. )
      iglo = [ jpiglo, jpjglo, jpk ]
      DO jv = 1, 3
         CALL chk( nf90_inq_dimid( ncid, cdim(jv), idim ) )
         CALL chk( nf90_inquire_dimension( ncid, idim, len=ilen ) )
         IF( ilen /= iglo(jv) ) THEN
            WRITE(cmsg,'(a,a,a,i0,a,i0,a)') 'rst_read: ', TRIM(cfile), ' has ', ilen, ' points in ', cdim(jv)   &
               &                          , ' where &namusr_def gives ', iglo(jv)
            CALL ctl_stop( cmsg, ld_all=.TRUE. )
         ENDIF
      END DO
      CALL chk( nf90_inq_varid( ncid, 'kt', ivar ) )    ;   CALL chk( nf90_get_var( ncid, ivar, ikt ) )
      CALL chk( nf90_inq_varid( ncid, 'nab', ivar ) )   ;   CALL chk( nf90_get_var( ncid, ivar, nab ) )
      CALL chk( nf90_inq_varid( ncid, 'rn_Dt', ivar ) ) ;   CALL chk( nf90_get_var( ncid, ivar, zdt ) )
      IF( ABS( zdt - rn_Dt ) > 0._wp ) THEN
         WRITE(cmsg,'(a,g0,a,a,a,g0)') 'namdom: rn_Dt = ', rn_Dt, ' differs from the time step of ',   &
            &                          TRIM(cfile), ': ', zdt
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      IF( nn_it000 /= ikt + 1 ) THEN
         WRITE(cmsg,'(a,i0,a,a,a,i0,a,i0)') 'namrun: nn_it000 = ', nn_it000, ' but ', TRIM(cfile),   &
            &                               ' ends at step ', ikt, ': nn_it000 must be ', ikt + 1
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      nnow = 1   ;   nm1 = 2   ;   nm2 = 3
      DO jv = 1, jpvar
         CALL chk( nf90_inq_varid( ncid, TRIM(cvar(jv)), ivar ) )
         SELECT CASE( jv )
         CASE( 1 )   ;   CALL get( un )
         CASE( 2 )   ;   CALL get( vn )
         CASE( 3 )   ;   CALL get( hn )
         CASE( 4 )   ;   CALL get( uta(:,:,:,nm1) )
         CASE( 5 )   ;   CALL get( vta(:,:,:,nm1) )
         CASE( 6 )   ;   CALL get( hta(:,:,:,nm1) )
         CASE( 7 )   ;   CALL get( uta(:,:,:,nm2) )
         CASE( 8 )   ;   CALL get( vta(:,:,:,nm2) )
         CASE( 9 )   ;   CALL get( hta(:,:,:,nm2) )
         END SELECT
      END DO
      IF( nf90_inq_varid( ncid, 'mlb_origin', ivar ) == NF90_NOERR ) THEN   ! the coupling's state
         DO jv = 1, 3
            CALL chk( nf90_inq_varid( ncid, 'mlb_'//TRIM(cmlb(jv)), ivar ) )
            CALL chk( nf90_get_var( ncid, ivar, imlb(jv) ) )
         END DO
         CALL inf_rst_set_schedule( imlb(1), imlb(2), imlb(3) )
         ALLOCATE( zwrk(jpi,jpj,jpk) )
         DO js = 1, 2
            DO jf = 1, jpfld
               IF( nf90_inq_varid( ncid, TRIM(inf_rst_name(jf, js)), ivar ) /= NF90_NOERR )   CYCLE
               zwrk(:,:,:) = 0._wp
               CALL get( zwrk )
               CALL inf_rst_set( jf, js, zwrk )
            END DO
         END DO
      ENDIF
      DO jv = 1, 3   ! the nudging tendency of the restart's step (written with ln_nudge)
         IF( nf90_inq_varid( ncid, TRIM(cnud(jv)), ivar ) /= NF90_NOERR )   CYCLE
         IF( .NOT. ALLOCATED(zwrk) )   ALLOCATE( zwrk(jpi,jpj,jpk) )
         zwrk(:,:,:) = 0._wp
         CALL get( zwrk )
         CALL nud_rst_set( jv, zwrk )
      END DO
      CALL chk( nf90_close( ncid ) )
      CALL lbc_lnk( un, vn, hn )
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,'(a,a,a,i10,a,i2)') ' rst_read : ', TRIM(cfile), ' read, step ', ikt, ', AB3 history ', nab
         WRITE(numout,*) '~~~~~~~~'
      ENDIF

   CONTAINS

      SUBROUTINE get( pfld )
         REAL(wp), DIMENSION(jpi,jpj,jpk), INTENT(inout) ::   pfld
         CALL chk( nf90_get_var( ncid, ivar, pfld(2:jpi-1,2:jpj-1,:),   &
            &                    start=[nimpp, njmpp, 1], count=[jpi-2, jpj-2, jpk] ) )
      END SUBROUTINE get

      SUBROUTINE chk( kstatus )
         INTEGER, INTENT(in) ::   kstatus
         CALL iom_check( kstatus, 'rst_read: read '//TRIM(cfile) )
      END SUBROUTINE chk

   END SUBROUTINE rst_read

   !!======================================================================
END MODULE rst
