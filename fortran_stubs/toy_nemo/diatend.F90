MODULE diatend
   !!======================================================================
   !!                       ***  MODULE  diatend  ***
   !! toy_nemo :  offline tendency diagnostic (&namtend): instead of time
   !!             stepping, read states u, v, h record by record and write
   !!             the model's own dynamical tendencies of each
   !!======================================================================
   !!   dia_tend_init : read &namtend (ref then cfg) and check it
   !!   dia_tend      : the offline loop over the records of cn_tend_in
   !!----------------------------------------------------------------------
   !! What is written is exactly what dyn_tend returns for the state: the
   !! full dynamical tendency (vorticity flux, grad(P + K), viscosity, wind,
   !! drag; continuity), without the external (coupling) tendencies. It is
   !! the x(n+1) = x(n) + dt T(n) of a forward-Euler step: the subgrid
   !! forcing of the closures is defined from it (docs/closures.md).
   !! Input and output: u, v, h (resp. dudt, dvdt, dhdt) as netCDF
   !! (record, z, y, x) = Fortran (x, y, z, record) on this run's global grid,
   !! land rim included, read and written on rank 0 and scattered / gathered
   !! (iom), so any decomposition gives the same numbers bit for bit.
   !!----------------------------------------------------------------------
   !! State owned here (written by dia_tend_init only): the &namtend entries
   !!----------------------------------------------------------------------
   USE mpi_f08       , ONLY : MPI_Bcast, MPI_INTEGER
   USE netcdf
   USE par_kind      , ONLY : wp, lc
   USE lib_mpp       , ONLY : mpi_comm_oce, lwp, numout, ctl_stop, ctl_nam, nam_open
   USE mppini        , ONLY : jpi, jpj, jpiglo, jpjglo
   USE domain        , ONLY : umask, vmask, tmask
   USE oce           , ONLY : jpk, un, vn, hn, uta, vta, hta
   USE dyn           , ONLY : dyn_tend
   USE lbclnk        , ONLY : lbc_lnk
   USE iom           , ONLY : iom_gather, iom_scatter, iom_check
   USE infmod        , ONLY : ln_mlb
   USE usrdef_nam    , ONLY : rn_dx, rn_dy, rn_rho0, rn_gprime, rn_f0, rn_beta, rn_tau0,   &
      &                       rn_hmin, rn_ahm, rn_bhm, rn_aeiv, rn_rfr, rn_shlat

   IMPLICIT NONE
   PRIVATE

   PUBLIC   dia_tend_init   ! called by nemogcm
   PUBLIC   dia_tend        ! called by nemogcm (instead of the step loop)

   !                                                  !!* namtend *
   LOGICAL          , PUBLIC ::   ln_tend     = .FALSE.            !: offline tendency mode
   CHARACTER(len=lc), PUBLIC ::   cn_tend_in  = 'states.nc'        !: states read
   CHARACTER(len=lc), PUBLIC ::   cn_tend_out = 'tendencies.nc'    !: tendencies written

   INTEGER, PARAMETER ::   jpvar = 3
   CHARACTER(len=1), PARAMETER, DIMENSION(jpvar) ::   cvin  = [ 'u', 'v', 'h' ]
   CHARACTER(len=4), PARAMETER, DIMENSION(jpvar) ::   cvout = [ 'dudt', 'dvdt', 'dhdt' ]

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE dia_tend_init
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE dia_tend_init  ***
      !! ** Purpose :   read &namtend and refuse wrong values before anything runs
      !!------------------------------------------------------------------
      INTEGER ::   inum, ios
      CHARACTER(len=lc) ::   cmsg
      NAMELIST/namtend/ ln_tend, cn_tend_in, cn_tend_out
      !!------------------------------------------------------------------
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, namtend, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namtend', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, namtend, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namtend', 'namelist_cfg', inum )

      IF( ln_tend ) THEN
         IF( LEN_TRIM(cn_tend_in) == 0 )    CALL ctl_stop( 'namtend: cn_tend_in is empty', ld_all=.TRUE. )
         IF( LEN_TRIM(cn_tend_out) == 0 )   CALL ctl_stop( 'namtend: cn_tend_out is empty', ld_all=.TRUE. )
         IF( TRIM(cn_tend_in) == TRIM(cn_tend_out) )   &
            &   CALL ctl_stop( 'namtend: cn_tend_out = cn_tend_in = '//TRIM(cn_tend_in)   &
            &                  //': the states would be overwritten', ld_all=.TRUE. )
         IF( ln_mlb )   CALL ctl_stop( 'namtend: ln_tend = .true. needs nammlb ln_mlb = .false. '   &
            &                          //'(no time step, nothing to exchange)', ld_all=.TRUE. )
      ENDIF
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'dia_tend_init : offline tendency diagnostic (&namtend)'
         WRITE(numout,*) '~~~~~~~~~~~~~'
         WRITE(numout,'(a,l10)') '   tendencies of given states    ln_tend     = ', ln_tend
         IF( ln_tend ) THEN
            WRITE(numout,'(a,a)') '   states read                   cn_tend_in  = ', TRIM(cn_tend_in)
            WRITE(numout,'(a,a)') '   tendencies written            cn_tend_out = ', TRIM(cn_tend_out)
         ENDIF
      ENDIF
   END SUBROUTINE dia_tend_init


   SUBROUTINE dia_tend
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE dia_tend  ***
      !! ** Purpose :   dudt, dvdt, dhdt of every record of cn_tend_in into
      !!                cn_tend_out (collective: every rank calls it)
      !!------------------------------------------------------------------
      INTEGER ::   ncin, ncout, idx, idy, idz, idrec, irecdim, jr, jv, nrec, idtin, idtout, ii
      INTEGER, DIMENSION(jpvar) ::   idin, idout
      INTEGER, DIMENSION(3) ::   iglo
      INTEGER, DIMENSION(4) ::   idims
      CHARACTER(len=lc) ::   cmsg, cname, cunits, crec
      CHARACTER(len=1), DIMENSION(3), PARAMETER ::   cdim = [ 'x', 'y', 'z' ]
      REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zglo
      REAL(wp), DIMENSION(1) ::   ztime
      LOGICAL ::   lltime
      !!------------------------------------------------------------------
      nrec = 0
      ncin = -1   ;   ncout = -1   ;   idtin = -1   ;   idtout = -1
      lltime = .FALSE.
      IF( lwp ) THEN
         ALLOCATE( zglo(jpiglo,jpjglo,jpk) )
         ! --- input: global grid of this run, u, v, h with a record dimension --- !
         CALL iom_check( nf90_open( cn_tend_in, NF90_NOWRITE, ncin ),   &
            &            'diatend: namtend cn_tend_in: cannot open '//TRIM(cn_tend_in) )
         iglo = [ jpiglo, jpjglo, jpk ]
         DO ii = 1, 3
            CALL chkin( nf90_inq_dimid( ncin, cdim(ii), idx ) )
            CALL chkin( nf90_inquire_dimension( ncin, idx, len=jr ) )
            IF( jr /= iglo(ii) ) THEN
               WRITE(cmsg,'(a,a,a,i0,a,a,a,i0)') 'diatend: ', TRIM(cn_tend_in), ' has ', jr, ' points in ', cdim(ii),   &
                  &                             ' where &namusr_def gives ', iglo(ii)
               CALL ctl_stop( cmsg )
            ENDIF
         END DO
         DO jv = 1, jpvar
            CALL chkin( nf90_inq_varid( ncin, cvin(jv), idin(jv) ) )
            CALL chkin( nf90_inquire_variable( ncin, idin(jv), ndims=ii ) )
            IF( ii /= 4 ) THEN
               WRITE(cmsg,'(a,a,a,a,i0,a)') 'diatend: ', TRIM(cn_tend_in), ': variable '//cvin(jv),   &
                  &                         ' has ', ii, ' dimensions, expected 4 (record, z, y, x)'
               CALL ctl_stop( cmsg )
            ENDIF
         END DO
         ! the record is u's 4th (netCDF: first) dimension, x, y, z its first three
         CALL chkin( nf90_inquire_variable( ncin, idin(1), dimids=idims ) )
         DO ii = 1, 3
            CALL chkin( nf90_inquire_dimension( ncin, idims(ii), name=cname ) )
            IF( TRIM(cname) /= cdim(ii) ) THEN
               WRITE(cmsg,'(a,a,a,a,a,a)') 'diatend: ', TRIM(cn_tend_in), ': u has dimension ', TRIM(cname),   &
                  &                        ' where (record, z, y, x) needs ', cdim(ii)
               CALL ctl_stop( cmsg )
            ENDIF
         END DO
         irecdim = idims(4)
         CALL chkin( nf90_inquire_dimension( ncin, irecdim, name=crec, len=nrec ) )
         lltime = nf90_inq_varid( ncin, TRIM(crec), idtin ) == nf90_noerr

         ! --- output: same layout --- !
         CALL iom_check( nf90_create( cn_tend_out, IOR(NF90_CLOBBER, NF90_64BIT_OFFSET), ncout ),   &
            &            'diatend: namtend cn_tend_out: cannot create '//TRIM(cn_tend_out) )
         CALL chkout( nf90_def_dim( ncout, 'x', jpiglo, idx ) )
         CALL chkout( nf90_def_dim( ncout, 'y', jpjglo, idy ) )
         CALL chkout( nf90_def_dim( ncout, 'z', jpk, idz ) )
         CALL chkout( nf90_def_dim( ncout, TRIM(crec), NF90_UNLIMITED, idrec ) )
         IF( lltime ) THEN
            CALL chkout( nf90_def_var( ncout, TRIM(crec), NF90_DOUBLE, [idrec], idtout ) )
            cunits = ''
            IF( nf90_get_att( ncin, idtin, 'units', cunits ) == nf90_noerr )   &
               &   CALL chkout( nf90_put_att( ncout, idtout, 'units', TRIM(cunits) ) )
            cunits = ''
            IF( nf90_get_att( ncin, idtin, 'calendar', cunits ) == nf90_noerr )   &
               &   CALL chkout( nf90_put_att( ncout, idtout, 'calendar', TRIM(cunits) ) )
         ENDIF
         DO jv = 1, jpvar
            CALL chkout( nf90_def_var( ncout, cvout(jv), NF90_DOUBLE, [idx, idy, idz, idrec], idout(jv) ) )
            SELECT CASE( jv )
            CASE( 1 )   ;   cname = 'dynamical tendency of u (dyn_tend, no external tendency)'   ;   cunits = 'm s-2'
            CASE( 2 )   ;   cname = 'dynamical tendency of v (dyn_tend, no external tendency)'   ;   cunits = 'm s-2'
            CASE( 3 )   ;   cname = 'dynamical tendency of h (dyn_tend, no external tendency)'   ;   cunits = 'm s-1'
            END SELECT
            CALL chkout( nf90_put_att( ncout, idout(jv), 'long_name', TRIM(cname) ) )
            CALL chkout( nf90_put_att( ncout, idout(jv), 'units', TRIM(cunits) ) )
            CALL chkout( nf90_put_att( ncout, idout(jv), 'grid_point', MERGE('U', MERGE('V', 'T', jv == 2), jv == 1) ) )
         END DO
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'Conventions', 'CF-1.8' ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'title', 'toy_nemo dynamical tendencies of given states' ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'source_states', TRIM(cn_tend_in) ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_dx', rn_dx ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_dy', rn_dy ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_rho0', rn_rho0 ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_gprime', rn_gprime ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_f0', rn_f0 ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_beta', rn_beta ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_tau0', rn_tau0 ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_hmin', rn_hmin ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_ahm', rn_ahm ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_bhm', rn_bhm ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_aeiv', rn_aeiv ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_rfr', rn_rfr ) )
         CALL chkout( nf90_put_att( ncout, NF90_GLOBAL, 'rn_shlat', rn_shlat ) )
         CALL chkout( nf90_enddef( ncout ) )
      ELSE
         ALLOCATE( zglo(1,1,1) )
      ENDIF
      CALL MPI_Bcast( nrec, 1, MPI_INTEGER, 0, mpi_comm_oce )

      DO jr = 1, nrec
         ! --- state of record jr on every rank, halos filled --- !
         DO jv = 1, jpvar
            IF( lwp )   CALL chkin( nf90_get_var( ncin, idin(jv), zglo, start=[1,1,1,jr], count=[jpiglo,jpjglo,jpk,1] ) )
            SELECT CASE( jv )
            CASE( 1 )   ;   CALL iom_scatter( jpk, zglo, un )
            CASE( 2 )   ;   CALL iom_scatter( jpk, zglo, vn )
            CASE( 3 )   ;   CALL iom_scatter( jpk, zglo, hn )
            END SELECT
         END DO
         DO ii = 1, jpk   ! land rim: whatever the file holds there, the model has 0
            un(:,:,ii) = un(:,:,ii) * umask(:,:)
            vn(:,:,ii) = vn(:,:,ii) * vmask(:,:)
            hn(:,:,ii) = hn(:,:,ii) * tmask(:,:)
         END DO
         CALL lbc_lnk( un, vn, hn )
         ! --- the model's own tendency, then gathered and written --- !
         uta(:,:,:,1) = 0._wp   ;   vta(:,:,:,1) = 0._wp   ;   hta(:,:,:,1) = 0._wp
         CALL dyn_tend( un, vn, hn, uta(:,:,:,1), vta(:,:,:,1), hta(:,:,:,1) )
         DO jv = 1, jpvar
            SELECT CASE( jv )
            CASE( 1 )   ;   CALL iom_gather( jpk, uta(:,:,:,1), zglo )
            CASE( 2 )   ;   CALL iom_gather( jpk, vta(:,:,:,1), zglo )
            CASE( 3 )   ;   CALL iom_gather( jpk, hta(:,:,:,1), zglo )
            END SELECT
            IF( lwp )   CALL chkout( nf90_put_var( ncout, idout(jv), zglo, start=[1,1,1,jr], count=[jpiglo,jpjglo,jpk,1] ) )
         END DO
         IF( lwp .AND. lltime ) THEN
            CALL chkin( nf90_get_var( ncin, idtin, ztime, start=[jr], count=[1] ) )
            CALL chkout( nf90_put_var( ncout, idtout, ztime, start=[jr], count=[1] ) )
         ENDIF
      END DO

      IF( lwp ) THEN
         CALL chkin( nf90_close( ncin ) )
         CALL chkout( nf90_close( ncout ) )
         WRITE(numout,*)
         WRITE(numout,'(a,i10,a,a)') ' dia_tend : tendencies of ', nrec, ' records written in ', TRIM(cn_tend_out)
         FLUSH(numout)
      ENDIF

   CONTAINS

      SUBROUTINE chkin( kstatus )
         INTEGER, INTENT(in) ::   kstatus
         CALL iom_check( kstatus, 'diatend: read '//TRIM(cn_tend_in) )
      END SUBROUTINE chkin

      SUBROUTINE chkout( kstatus )
         INTEGER, INTENT(in) ::   kstatus
         CALL iom_check( kstatus, 'diatend: write '//TRIM(cn_tend_out) )
      END SUBROUTINE chkout

   END SUBROUTINE dia_tend

   !!======================================================================
END MODULE diatend
