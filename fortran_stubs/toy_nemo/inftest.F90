MODULE inftest
   !!======================================================================
   !!                       ***  MODULE  inftest  ***
   !! toy_nemo :  test hooks of the coupling (&nammlb_test): a closure run
   !!             in process instead of the servers, a NaN sent at one
   !!             point (the tests of on_nan), and a collective on
   !!             MPI_COMM_WORLD (the tests of a model blocked outside the coupling)
   !!======================================================================
   !!   inf_test_init  : read and check &nammlb_test (ref then cfg)
   !!   inf_test_nan   : the copy of a sent field that carries the NaN, when due
   !!   inf_test_world : MPI_Barrier on MPI_COMM_WORLD, when due
   !!----------------------------------------------------------------------
   !! Kept apart from &nammlb, which is what a coupled configuration sets:
   !! nothing here is needed to run with mlbridge servers. The in-process
   !! closures themselves are in infclosure; infmod runs them.
   !!----------------------------------------------------------------------
   USE, INTRINSIC :: ieee_arithmetic, ONLY : ieee_value, ieee_quiet_nan
   USE mpi_f08   , ONLY : MPI_Barrier, MPI_COMM_WORLD
   USE par_kind  , ONLY : wp, lc
   USE lib_mpp   , ONLY : lwp, numout, ctl_stop, ctl_nam, nam_open
   USE mppini    , ONLY : jpi, jpj, jpiglo, jpjglo, nimpp, njmpp

   IMPLICIT NONE
   PRIVATE

   PUBLIC   inf_test_init   ! called by infmod (inf_def)
   PUBLIC   inf_test_nan    ! called by infmod (put_field)
   PUBLIC   inf_test_world  ! called by infmod (inf_put)

   INTEGER, PARAMETER ::   lf = 16                    ! length of a field name (as infmod)

   !                                      !!* nammlb_test *  (read by inf_test_init only)
   CHARACTER(len=lf), PUBLIC ::   cn_mlb_inproc = 'none'   !: in-process closure: none | laplacian | smooth3 (infmod)
   REAL(wp)         , PUBLIC ::   rn_mlb_coef = 1._wp      !: its coefficient (infmod)
   INTEGER           ::   nn_mlb_nan_kt = -1               ! step at which a NaN is sent (-1: never)
   INTEGER           ::   nn_mlb_nan_i = 1, nn_mlb_nan_j = 1, nn_mlb_nan_k = 1   ! its global (i, j, k)
   CHARACTER(len=lf) ::   cn_mlb_nan_fld = 'u'             ! the sent field that carries it
   INTEGER           ::   nn_mlb_world_kt = -1             ! step of the MPI_COMM_WORLD barrier (-1: never)
   LOGICAL          , PUBLIC ::   ln_mlb_hls2 = .FALSE.    !: coupled: NEMO 4.2 arrays (halo 2, jpk = layers + 1
   !                                                       !  land level) handed to mlb_put/mlb_get (infmod)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE inf_test_init( kpk, ld_mlb, cdsnd )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_test_init  ***
      !! ** Purpose :   read &nammlb_test and refuse wrong values before the
      !!                first step, naming entry and value
      !!------------------------------------------------------------------
      INTEGER                         , INTENT(in) ::   kpk      ! number of layers
      LOGICAL                         , INTENT(in) ::   ld_mlb   ! coupled to servers (&nammlb ln_mlb)
      CHARACTER(len=*), DIMENSION(:)  , INTENT(in) ::   cdsnd    ! fields sent (&nammlb cn_mlb_snd)
      INTEGER ::   inum, ios
      CHARACTER(len=lc) ::   cmsg
      NAMELIST/nammlb_test/ cn_mlb_inproc, rn_mlb_coef, nn_mlb_nan_kt, nn_mlb_nan_i, nn_mlb_nan_j, nn_mlb_nan_k,   &
         &                  cn_mlb_nan_fld, nn_mlb_world_kt, ln_mlb_hls2
      !!------------------------------------------------------------------
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, nammlb_test, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'nammlb_test', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, nammlb_test, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'nammlb_test', 'namelist_cfg', inum )
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'inf_test_init : test hooks of the coupling (&nammlb_test)'
         WRITE(numout,*) '~~~~~~~~~~~~~'
         WRITE(numout,'(a,a)')      '   in-process closure                 cn_mlb_inproc = ', TRIM(cn_mlb_inproc)
         WRITE(numout,'(a,es12.5)') '   its coefficient                    rn_mlb_coef   = ', rn_mlb_coef
         IF( nn_mlb_nan_kt >= 0 )   WRITE(numout,'(a,i0,a,3(i0,1x),a)') '   TEST: NaN sent at step ', nn_mlb_nan_kt,   &
            &   ' in '//TRIM(cn_mlb_nan_fld)//' at global (i j k) ', nn_mlb_nan_i, nn_mlb_nan_j, nn_mlb_nan_k
         IF( ln_mlb_hls2 )   WRITE(numout,'(a)') '   TEST: halo-2 arrays with one more (land) level to mlb_put/mlb_get'
         IF( nn_mlb_world_kt >= 0 )   WRITE(numout,'(a,i0)') '   TEST: MPI_Barrier(MPI_COMM_WORLD) at step ',   &
            &   nn_mlb_world_kt
      ENDIF
      SELECT CASE( cn_mlb_inproc )
      CASE( 'none', 'laplacian', 'smooth3' )
      CASE DEFAULT
         CALL ctl_stop( 'nammlb_test: cn_mlb_inproc = "'//TRIM(cn_mlb_inproc)//'": none, laplacian or smooth3',   &
            &           ld_all=.TRUE. )
      END SELECT
      IF( ld_mlb .AND. cn_mlb_inproc /= 'none' )   CALL ctl_stop( 'nammlb_test: cn_mlb_inproc = "'                 &
         &   //TRIM(cn_mlb_inproc)//'" and nammlb: ln_mlb = .true.: closures run either in the servers or in '   &
         &   //'process, not both', ld_all=.TRUE. )
      IF( nn_mlb_nan_kt < 0 )   RETURN
      IF( .NOT. ANY( cdsnd == cn_mlb_nan_fld ) .AND. ld_mlb )   CALL ctl_stop( 'nammlb_test: cn_mlb_nan_fld = "'   &
         &   //TRIM(cn_mlb_nan_fld)//'" is not a sent field (nammlb: cn_mlb_snd)', ld_all=.TRUE. )
      IF( nn_mlb_nan_i < 1 .OR. nn_mlb_nan_i > jpiglo .OR. nn_mlb_nan_j < 1 .OR. nn_mlb_nan_j > jpjglo   &
         & .OR. nn_mlb_nan_k < 1 .OR. nn_mlb_nan_k > kpk ) THEN
         WRITE(cmsg,'(a,3(i0,a))') 'nammlb_test: NaN point (nn_mlb_nan_i, _j, _k) = (', nn_mlb_nan_i, ', ',   &
            &                      nn_mlb_nan_j, ', ', nn_mlb_nan_k, ') is outside the grid'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
   END SUBROUTINE inf_test_init


   SUBROUTINE inf_test_nan( cdname, kt, pf, pwork, ldnan )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_test_nan  ***
      !! ** Purpose :   at step nn_mlb_nan_kt, on the rank that owns the global
      !!                point (nn_mlb_nan_i, _j, _k), pwork = pf with a NaN there
      !!                (ldnan = .true.: send pwork instead of pf)
      !!------------------------------------------------------------------
      CHARACTER(len=*)          , INTENT(in   ) ::   cdname   ! sent field
      INTEGER                   , INTENT(in   ) ::   kt       ! time step
      REAL(wp), DIMENSION(:,:,:), INTENT(in   ) ::   pf       ! the field (jpi, jpj, jpk)
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pwork    ! its copy with the NaN
      LOGICAL                   , INTENT(  out) ::   ldnan
      INTEGER ::   ii, ij
      !!------------------------------------------------------------------
      ii = nn_mlb_nan_i - nimpp + 2   ! local indices of the NaN point
      ij = nn_mlb_nan_j - njmpp + 2
      ldnan = kt == nn_mlb_nan_kt .AND. cdname == cn_mlb_nan_fld .AND. ii >= 2 .AND. ii <= jpi-1   &
         &                        .AND. ij >= 2 .AND. ij <= jpj-1
      IF( .NOT. ldnan )   RETURN
      pwork(:,:,:) = pf(:,:,:)
      pwork(ii,ij,nn_mlb_nan_k) = ieee_value( 1._wp, ieee_quiet_nan )
   END SUBROUTINE inf_test_nan


   SUBROUTINE inf_test_world( kt )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_test_world  ***
      !! ** Purpose :   at step nn_mlb_world_kt, every rank enters a barrier on
      !!                MPI_COMM_WORLD, which includes the servers: the bug of a
      !!                routine written for the world instead of the communicator
      !!                mlb_init returned. Coupled, it never returns (the servers
      !!                must end the job).
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kt   ! time step
      !!------------------------------------------------------------------
      IF( kt == nn_mlb_world_kt )   CALL MPI_Barrier( MPI_COMM_WORLD )
   END SUBROUTINE inf_test_world

   !!======================================================================
END MODULE inftest
