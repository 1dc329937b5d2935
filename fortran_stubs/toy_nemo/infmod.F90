MODULE infmod
   !!======================================================================
   !!                       ***  MODULE  infmod  ***
   !! toy_nemo :  the coupling hook to external (machine-learned) closures,
   !!             in the style of NEMO's infmod
   !!======================================================================
   !!   inf_init  : before mpp_start: read &nammlb; coupled: mlb_init, which
   !!               gives the communicator the model must run on
   !!   inf_def   : after dom_init: check &nammlb and &nammlb_test (inftest);
   !!               coupled: grid, mask, fields, handshake (mlb_enddef)
   !!   inf_put   : early in the step, hand u, v, h of step kt to the closures
   !!   inf_get   : late in the step, receive u_tend, v_tend, h_tend
   !!   inf_final : end of the run (mlb_finalize)
   !!   inf_rst_info, inf_rst_get : what the restart writer (rst_write) saves
   !!   inf_rst_set_schedule, inf_rst_set : what the restart reader (rst_read)
   !!               found, given back to the library by inf_def
   !!----------------------------------------------------------------------
   !! Restarts (docs/coupling.md, "Restarts"): at each restart step the file
   !! also holds the schedule's origin (exchanges on the steps where
   !! MOD(kt - origin, every) == 0, origin = nn_it000 of the first run), and
   !! per received field the outputs held between exchanges and, with lag 1,
   !! the outputs in flight. A run started from it with ln_mlb_rst gives them
   !! back and continues bit for bit; anything that cannot be given back is
   !! said with a warning before the first step.
   !! The step adds the tendencies by forward Euler after the AB3 update:
   !!    u(n+1) = u(n) + dt * AB3(...) + dt * u_tend      (same for v, h)
   !! Units: u_tend, v_tend [m s-2], h_tend [m s-1]; zero when no closure runs.
   !! Closures run either in mlbridge servers (ln_mlb = .true., fields sent
   !! cn_mlb_snd, received cn_mlb_rcv, every nn_mlb_every steps) or, for the
   !! comparison tests, in process (&nammlb_test cn_mlb_inproc = 'laplacian'
   !! or 'smooth3', modules inftest and infclosure): X_tend = closure(X) for
   !! each X of cn_mlb_snd whose X_tend is in cn_mlb_rcv, as the Python
   !! closure maps lap_u -> u_tend.
   !! Any error of an mlbridge call stops the run (ctl_stop) with the library's
   !! message: every rank ends non-zero.
   !!----------------------------------------------------------------------
   USE, INTRINSIC :: iso_fortran_env, ONLY : error_unit, int32
   USE mpi_f08   , ONLY : MPI_Comm, MPI_COMM_WORLD, MPI_Initialized, MPI_Init, MPI_Comm_rank,   &
      &                   MPI_Abort, MPI_Wtime
   USE par_kind  , ONLY : wp, lc
   USE lib_mpp   , ONLY : lwp, numout, ctl_stop, ctl_warn
   USE in_out_manager, ONLY : ln_rstart, nn_it000, cn_ocerst_in
   USE mppini    , ONLY : jpi, jpj, jpiglo, jpjglo, nimpp, njmpp, jperio
   USE domain    , ONLY : tmask
   USE nudging   , ONLY : nud_last
   USE infclosure, ONLY : inc_laplacian, inc_smooth3
   USE inftest   , ONLY : inf_test_init, inf_test_nan, inf_test_world, cn_mlb_inproc, rn_mlb_coef,   &
      &                   ln_mlb_hls2
   USE, INTRINSIC :: ieee_arithmetic, ONLY : ieee_value, ieee_quiet_nan, ieee_is_nan
   USE mlbridge  , ONLY : mlb_init, mlb_def_grid, mlb_def_field, mlb_enddef, mlb_put, mlb_get,   &
      &                   mlb_finalize, mlb_error_message, MLB_SEND, MLB_RECV, MLB_OK, MLB_ERR_REMOTE,   &
      &                   mlb_def_restart, mlb_get_schedule, mlb_save_outputs, mlb_load_outputs,   &
      &                   MLB_HELD, MLB_PENDING

   IMPLICIT NONE
   PRIVATE

   PUBLIC   inf_init    ! called by nemogcm (before mpp_start)
   PUBLIC   inf_def     ! called by nemogcm (after dom_init)
   PUBLIC   inf_put     ! called by step (early)
   PUBLIC   inf_get     ! called by step (late)
   PUBLIC   inf_final   ! called by nemogcm
   PUBLIC   inf_rst_info, inf_rst_get, inf_rst_name          ! called by rst (rst_write, rst_read)
   PUBLIC   inf_rst_set_schedule, inf_rst_set                ! called by rst (rst_read)

   INTEGER, PARAMETER, PUBLIC ::   jpfld = 3          !: fields of the hook: u, v, h (and their tendencies)
   INTEGER, PARAMETER ::   lf = 16                    ! length of a field name
   CHARACTER(len=lf), PARAMETER ::   cfld(jpfld) = [CHARACTER(len=lf) :: 'u', 'v', 'h']
   CHARACTER(len=lf), PARAMETER ::   ctnd(jpfld) = [CHARACTER(len=lf) :: 'u_tend', 'v_tend', 'h_tend']
   CHARACTER(len=1) , PARAMETER ::   cpnt(jpfld) = [ 'U', 'V', 'T' ]   ! their C-grid points
   INTEGER, PARAMETER ::   jpsnd = 2 * jpfld                   ! fields the hook can send
   !                                   ! u_nud, v_nud, h_nud: the nudging tendency of the last step
   !                                   ! (module nudging, nud_last): a target for online training
   CHARACTER(len=lf), PARAMETER ::   cnud(jpfld) = [CHARACTER(len=lf) :: 'u_nud', 'v_nud', 'h_nud']

   !                                      !!* nammlb *
   LOGICAL , PUBLIC ::   ln_mlb = .FALSE.     !: exchange fields with the mlbridge servers
   CHARACTER(len=lf) ::   cn_mlb_snd(jpsnd) = [ cfld, [CHARACTER(len=lf) :: '', '', ''] ]   ! fields sent
   !                                                  ! (u, v, h, u_nud, v_nud, h_nud; '' = unused slot)
   CHARACTER(len=lf) ::   cn_mlb_rcv(jpfld) = ctnd   ! fields received (u_tend, v_tend, h_tend)
   INTEGER           ::   nn_mlb_lev(jpsnd) = 0      ! levels of each sent field (0: all layers)
   INTEGER           ::   nn_mlb_every = 1           ! exchange every nn_mlb_every steps
   LOGICAL           ::   ln_mlb_rst = .TRUE.        ! with ln_rstart: give the coupling's saved state back
   !                                      !!* nammlb_test *: module inftest (cn_mlb_inproc, rn_mlb_coef)

   LOGICAL, PUBLIC ::   ln_mlb_tend_out = .FALSE.   !: diawri writes u_tend, v_tend, h_tend (set by inf_def)

   INTEGER ::   nkt_put = -1                   ! step of the last inf_put (inf_get must match it)
   INTEGER ::   nkt0 = -1                      ! first step seen (schedule of the in-process closure)
   INTEGER ::   npk = 0                        ! number of layers
   LOGICAL ::   lltend(jpfld) = .FALSE.        ! in process: X_tend = closure(X) for this X
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:,:) ::   ztend      ! in-process outputs (jpi, jpj, jpk, 3)
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:)   ::   zwa, zwb   ! work arrays (smooth3, NaN injection)
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:)   ::   znud       ! the nudging tendency sent (u_nud, v_nud, h_nud)
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:)   ::   zhls2      ! ln_mlb_hls2: (jpi+2, jpj+2, jpk+1) NEMO 4.2 copy
   !                                      !!* the coupling's state read by rst_read, until inf_def gives it back
   LOGICAL ::   llrst_in = .FALSE.             ! the restart holds the coupling's state
   INTEGER ::   nrst_origin, nrst_every, nrst_lag   ! its schedule
   LOGICAL  ::   llrst_slot(jpfld,2) = .FALSE.  ! (u_tend, v_tend, h_tend) x (held, pending) found
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:,:,:) ::   zrst   ! their values (jpi, jpj, jpk, jpfld, 2)
   CHARACTER(len=7), PARAMETER ::   cslot(2) = [ 'held   ', 'pending' ]

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE inf_init( kcomm )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_init  ***
      !! ** Purpose :   read &nammlb (ref then cfg); coupled, split MPI_COMM_WORLD
      !!                with the servers (mlb_init)
      !!
      !! ** Method  :   called before mpp_start, so the model's communicator is
      !!                not there yet: errors are written by world rank 0 and end
      !!                the job with MPI_Abort(MPI_COMM_WORLD). mlb_init returns
      !!                with an error (never hangs) when the servers do not join.
      !!------------------------------------------------------------------
      TYPE(MPI_Comm), INTENT(out) ::   kcomm   ! communicator the model runs on
      LOGICAL ::   llinit
      INTEGER ::   icomm, istat
      CHARACTER(len=lc)   ::   cmsg
      CHARACTER(len=4096) ::   clerr
      !!------------------------------------------------------------------
      CALL MPI_Initialized( llinit )
      IF( .NOT. llinit )   CALL MPI_Init()   ! here, not in mlb_init: the model finalizes MPI itself
      kcomm = MPI_COMM_WORLD
      CALL nammlb_read( 'namelist_ref', cmsg )
      IF( LEN_TRIM(cmsg) == 0 )   CALL nammlb_read( 'namelist_cfg', cmsg )
      IF( LEN_TRIM(cmsg) > 0 )   CALL early_stop( cmsg, ld_each=.FALSE. )
      IF( .NOT. ln_mlb )   RETURN
      CALL mlb_init( icomm, istat )
      IF( istat /= MLB_OK ) THEN
         CALL mlb_error_message( clerr )
         CALL early_stop( 'inf_init: mlb_init: '//TRIM(clerr), ld_each=.TRUE. )
      ENDIF
      kcomm%MPI_VAL = icomm
   END SUBROUTINE inf_init


   SUBROUTINE inf_def( kpk )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_def  ***
      !! ** Purpose :   check &nammlb, read &nammlb_test; coupled, declare the grid,
      !!                the land mask and the fields, and do the handshake
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kpk   ! number of layers
      INTEGER ::   jf, istat, ilev
      LOGICAL ::   llwarm   ! restarted, and the coupling's state is given back
      !!------------------------------------------------------------------
      npk = kpk
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'inf_def : coupling hook (&nammlb)'
         WRITE(numout,*) '~~~~~~~'
         WRITE(numout,'(a,l2)')   '   exchange with mlbridge servers     ln_mlb        = ', ln_mlb
         WRITE(numout,'(a,6(1x,a))') '   fields sent                        cn_mlb_snd    =', (TRIM(cn_mlb_snd(jf)), jf = 1, jpsnd)
         WRITE(numout,'(a,6(1x,i0))') '   levels sent (0: all)               nn_mlb_lev    =', nn_mlb_lev
         WRITE(numout,'(a,3(1x,a))') '   fields received                    cn_mlb_rcv    =', (TRIM(cn_mlb_rcv(jf)), jf = 1, jpfld)
         WRITE(numout,'(a,i0)')   '   exchange every                     nn_mlb_every  = ', nn_mlb_every
         WRITE(numout,'(a,l2)')   '   restore the coupling from restarts ln_mlb_rst    = ', ln_mlb_rst
      ENDIF
      CALL nammlb_check( kpk )
      CALL inf_test_init( kpk, ln_mlb, cn_mlb_snd )

      ln_mlb_tend_out = ln_mlb .OR. cn_mlb_inproc /= 'none'
      ALLOCATE( zwa(jpi,jpj,kpk), zwb(jpi,jpj,kpk) )
      zwa(:,:,:) = 0._wp   ;   zwb(:,:,:) = 0._wp
      IF( cn_mlb_inproc /= 'none' ) THEN
         ALLOCATE( ztend(jpi,jpj,kpk,jpfld) )
         ztend(:,:,:,:) = 0._wp
         DO jf = 1, jpfld
            lltend(jf) = ANY( cn_mlb_snd == cfld(jf) ) .AND. ANY( cn_mlb_rcv == ctnd(jf) )
         END DO
      ENDIF
      llwarm = rst_is_warm()
      IF( .NOT. ln_mlb ) THEN
         IF( llwarm .AND. ALLOCATED(ztend) )   CALL rst_restore_inproc
         IF( ALLOCATED(zrst) )   DEALLOCATE( zrst )
         RETURN
      ENDIF

      CALL mlb_def_grid( jpiglo, jpjglo, nimpp, njmpp, jpi-2, jpj-2, istat,   &
         &               mask=INT( tmask(2:jpi-1,2:jpj-1), int32 ) )
      CALL inf_check( istat, 'inf_def: mlb_def_grid' )
      DO jf = 1, jpsnd
         IF( LEN_TRIM(cn_mlb_snd(jf)) == 0 )   CYCLE
         ilev = kpk
         IF( nn_mlb_lev(jf) > 0 )   ilev = nn_mlb_lev(jf)
         IF( jperio /= 0 ) THEN   ! folded grid: the server needs each field's point (u U, v V, h T)
            CALL mlb_def_field( TRIM(cn_mlb_snd(jf)), ilev, MLB_SEND, nn_mlb_every, istat,   &
               &                grid=point_of(cn_mlb_snd(jf)) )
         ELSE
            CALL mlb_def_field( TRIM(cn_mlb_snd(jf)), ilev, MLB_SEND, nn_mlb_every, istat )
         ENDIF
         CALL inf_check( istat, 'inf_def: mlb_def_field '//TRIM(cn_mlb_snd(jf)) )
      END DO
      DO jf = 1, jpfld
         IF( LEN_TRIM(cn_mlb_rcv(jf)) == 0 )   CYCLE
         IF( jperio /= 0 ) THEN
            CALL mlb_def_field( TRIM(cn_mlb_rcv(jf)), kpk, MLB_RECV, nn_mlb_every, istat,   &
               &                grid=point_of(cn_mlb_rcv(jf)) )
         ELSE
            CALL mlb_def_field( TRIM(cn_mlb_rcv(jf)), kpk, MLB_RECV, nn_mlb_every, istat )
         ENDIF
         CALL inf_check( istat, 'inf_def: mlb_def_field '//TRIM(cn_mlb_rcv(jf)) )
      END DO
      IF( llwarm ) THEN   ! the schedule keeps the first run's phase; the servers are told
         CALL mlb_def_restart( nrst_origin, istat )
         CALL inf_check( istat, 'inf_def: mlb_def_restart' )
      ENDIF
      CALL mlb_enddef( istat )   ! the handshake: a mismatch stops here, naming both values
      IF( istat == MLB_ERR_REMOTE )   CALL inf_check( istat, 'inf_def: mlb_enddef', ld_all=.TRUE. )   ! same answer on every rank
      CALL inf_check( istat, 'inf_def: mlb_enddef' )
      IF( llwarm )   CALL rst_restore
      IF( ALLOCATED(zrst) )   DEALLOCATE( zrst )
      IF( lwp ) THEN
         WRITE(numout,*) '   handshake with the mlbridge servers done'
         FLUSH(numout)
      ENDIF
   END SUBROUTINE inf_def


   SUBROUTINE inf_put( kt, pu, pv, ph )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_put  ***
      !! ** Purpose :   send the fields of step kt (halo included) to the closures,
      !!                or run the in-process closure on them
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in) ::   kt           ! time step
      REAL(wp), DIMENSION(:,:,:), INTENT(in) ::   pu, pv, ph   ! u, v, h (jpi, jpj, jpk)
      INTEGER ::   jf
      !!------------------------------------------------------------------
      IF( ANY( SHAPE(pu) /= SHAPE(ph) ) .OR. ANY( SHAPE(pv) /= SHAPE(ph) ) )   &
         &   CALL ctl_stop( 'inf_put: u, v and h must have the same (jpi, jpj, jpk) shape' )
      nkt_put = kt
      IF( nkt0 < 0 )   nkt0 = kt
      CALL inf_test_world( kt )
      IF( ln_mlb ) THEN
         DO jf = 1, jpsnd
            SELECT CASE( cn_mlb_snd(jf) )
            CASE( 'u' )   ;   CALL put_field( 'u', kt, pu )
            CASE( 'v' )   ;   CALL put_field( 'v', kt, pv )
            CASE( 'h' )   ;   CALL put_field( 'h', kt, ph )
            CASE( 'u_nud' )   ;   CALL put_nudging( 1, kt, SHAPE(pu) )
            CASE( 'v_nud' )   ;   CALL put_nudging( 2, kt, SHAPE(pu) )
            CASE( 'h_nud' )   ;   CALL put_nudging( 3, kt, SHAPE(pu) )
            END SELECT
         END DO
      ELSEIF( ALLOCATED(ztend) ) THEN
         IF( MOD( kt - nkt0, nn_mlb_every ) /= 0 )   RETURN   ! hold the last outputs
         IF( lltend(1) )   CALL inproc( pu, ztend(:,:,:,1), 'U' )
         IF( lltend(2) )   CALL inproc( pv, ztend(:,:,:,2), 'V' )
         IF( lltend(3) )   CALL inproc( ph, ztend(:,:,:,3), 'T' )
      ENDIF
   END SUBROUTINE inf_put


   SUBROUTINE inf_get( kt, pu_tend, pv_tend, ph_tend )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_get  ***
      !! ** Purpose :   external tendencies of step kt (interior points; zero for a
      !!                field no closure produces). Between exchanges the servers'
      !!                last outputs are kept.
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in   ) ::   kt                          ! time step
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pu_tend, pv_tend, ph_tend   ! [m s-2], [m s-2], [m s-1]
      CHARACTER(len=lc) ::   cmsg
      !!------------------------------------------------------------------
      IF( kt /= nkt_put ) THEN
         WRITE(cmsg,'(a,i0,a,i0)') 'inf_get: called at step ', kt, ' but the last inf_put was at step ', nkt_put
         CALL ctl_stop( cmsg )
      ENDIF
      IF( ln_mlb ) THEN
         CALL get_field( 'u_tend', kt, pu_tend )
         CALL get_field( 'v_tend', kt, pv_tend )
         CALL get_field( 'h_tend', kt, ph_tend )
      ELSEIF( ALLOCATED(ztend) ) THEN
         pu_tend(:,:,:) = ztend(:,:,:,1)
         pv_tend(:,:,:) = ztend(:,:,:,2)
         ph_tend(:,:,:) = ztend(:,:,:,3)
      ELSE
         pu_tend(:,:,:) = 0._wp   ! no closure: no external tendency
         pv_tend(:,:,:) = 0._wp
         ph_tend(:,:,:) = 0._wp
      ENDIF
   END SUBROUTINE inf_get


   SUBROUTINE inf_final
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_final  ***
      !! ** Purpose :   end the exchanges (the servers get this rank's goodbye)
      !!------------------------------------------------------------------
      INTEGER ::   istat
      !!------------------------------------------------------------------
      IF( .NOT. ln_mlb )   RETURN
      CALL mlb_finalize( istat )
      CALL inf_check( istat, 'inf_final: mlb_finalize' )
   END SUBROUTINE inf_final


   SUBROUTINE inf_rst_info( ld_save, korigin, kevery, klag, ld_slot )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_rst_info  ***
      !! ** Purpose :   what the restart of this step must hold for the coupling
      !!                to continue bit for bit (every rank; no communication)
      !!------------------------------------------------------------------
      LOGICAL, INTENT(out) ::   ld_save                 ! a closure runs: there is something to save
      INTEGER, INTENT(out) ::   korigin, kevery, klag   ! the schedule
      LOGICAL, INTENT(out) ::   ld_slot(jpfld,2)        ! (u_tend, v_tend, h_tend) x (held, pending) to save
      INTEGER ::   jf, istat, inpend
      !!------------------------------------------------------------------
      ld_save = .FALSE.   ;   ld_slot(:,:) = .FALSE.
      korigin = nkt0   ;   kevery = nn_mlb_every   ;   klag = 0
      IF( ln_mlb ) THEN
         ld_save = .TRUE.
         CALL mlb_get_schedule( korigin, kevery, klag, inpend, istat )
         CALL inf_check( istat, 'inf_rst_info: mlb_get_schedule' )
         DO jf = 1, jpfld
            ld_slot(jf,1) = ANY( cn_mlb_rcv == ctnd(jf) )
            ld_slot(jf,2) = ld_slot(jf,1) .AND. inpend > 0
         END DO
      ELSEIF( ALLOCATED(ztend) ) THEN   ! in process: lag 0, the outputs held in ztend
         ld_save = .TRUE.
         ld_slot(:,1) = lltend(:)
      ENDIF
   END SUBROUTINE inf_rst_info


   SUBROUTINE inf_rst_get( kf, kslot, pf )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inf_rst_get  ***
      !! ** Purpose :   the outputs ctnd(kf) of slot kslot (1 held, 2 pending) into
      !!                the inner points of pf (jpi, jpj, jpk). With lag 1 the
      !!                pending ones are waited for here: a restart step costs the
      !!                overlap of one exchange.
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in   ) ::   kf, kslot
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pf
      INTEGER ::   istat
      !!------------------------------------------------------------------
      pf(:,:,:) = 0._wp
      IF( ln_mlb ) THEN
         CALL mlb_save_outputs( TRIM(ctnd(kf)), MERGE( MLB_HELD, MLB_PENDING, kslot == 1 ), pf, istat, halo=1 )
         CALL inf_check( istat, 'inf_rst_get: mlb_save_outputs '//TRIM(ctnd(kf)) )
      ELSEIF( ALLOCATED(ztend) .AND. kslot == 1 ) THEN
         pf(:,:,:) = ztend(:,:,:,kf)
      ENDIF
   END SUBROUTINE inf_rst_get


   FUNCTION inf_rst_name( kf, kslot ) RESULT( cdname )
      !! name of the restart variable of the outputs ctnd(kf) in slot kslot: mlb_held_u_tend, ...
      INTEGER, INTENT(in) ::   kf, kslot
      CHARACTER(len=32)   ::   cdname
      cdname = 'mlb_'//TRIM(cslot(kslot))//'_'//TRIM(ctnd(kf))
   END FUNCTION inf_rst_name


   SUBROUTINE inf_rst_set_schedule( korigin, kevery, klag )
      !! rst_read: the restart holds the coupling's state, saved with this schedule
      INTEGER, INTENT(in) ::   korigin, kevery, klag
      llrst_in = .TRUE.
      nrst_origin = korigin   ;   nrst_every = kevery   ;   nrst_lag = klag
   END SUBROUTINE inf_rst_set_schedule


   SUBROUTINE inf_rst_set( kf, kslot, pf )
      !! rst_read: the saved outputs ctnd(kf) of slot kslot (kept until inf_def gives them back)
      INTEGER                   , INTENT(in) ::   kf, kslot
      REAL(wp), DIMENSION(:,:,:), INTENT(in) ::   pf
      IF( .NOT. ALLOCATED(zrst) ) THEN
         ALLOCATE( zrst(SIZE(pf,1),SIZE(pf,2),SIZE(pf,3),jpfld,2) )
         zrst(:,:,:,:,:) = 0._wp
      ENDIF
      zrst(:,:,:,kf,kslot) = pf(:,:,:)
      llrst_slot(kf,kslot) = .TRUE.
   END SUBROUTINE inf_rst_set

   !!----------------------------------------------------------------------
   !!                          private routines
   !!----------------------------------------------------------------------

   SUBROUTINE put_field( cdname, kt, pf )
      !!------------------------------------------------------------------
      !! mlb_put of one field; when &nammlb_test asks, a copy carrying a NaN
      !! is sent instead (tests of on_nan, inf_test_nan)
      !!------------------------------------------------------------------
      CHARACTER(len=*)          , INTENT(in) ::   cdname
      INTEGER                   , INTENT(in) ::   kt
      REAL(wp), DIMENSION(:,:,:), INTENT(in) ::   pf
      INTEGER ::   istat
      LOGICAL ::   llnan
      !!------------------------------------------------------------------
      CALL inf_test_nan( cdname, kt, pf, zwa, llnan )
      IF( ln_mlb_hls2 ) THEN   ! as NEMO 4.2 holds it: halo 2, one more level (land); the halo ring
         !                     ! and the land level are NaN, which the library must never read
         CALL hls2_alloc( SIZE(pf, 3) )
         zhls2(:,:,:) = ieee_value( 1._wp, ieee_quiet_nan )
         IF( llnan ) THEN
            zhls2(2:jpi+1,2:jpj+1,1:npk) = zwa(:,:,1:npk)
         ELSE
            zhls2(2:jpi+1,2:jpj+1,1:npk) = pf(:,:,1:npk)
         ENDIF
         CALL mlb_put( cdname, kt, zhls2, istat )   ! halo 2 deduced from the shape
         CALL inf_check( istat, 'inf_put: mlb_put '//cdname//' (halo 2, jpk levels)' )
         RETURN
      ENDIF
      IF( llnan ) THEN
         CALL mlb_put( cdname, kt, zwa, istat, halo=1 )
      ELSE
         CALL mlb_put( cdname, kt, pf, istat, halo=1 )
      ENDIF
      CALL inf_check( istat, 'inf_put: mlb_put '//cdname )
   END SUBROUTINE put_field


   SUBROUTINE put_nudging( kvar, kt, kshape )
      !! mlb_put of the nudging tendency of the last step (u_nud, v_nud, h_nud)
      INTEGER              , INTENT(in) ::   kvar, kt
      INTEGER, DIMENSION(3), INTENT(in) ::   kshape   ! (jpi, jpj, jpk) of the state
      IF( .NOT. ALLOCATED(znud) )   ALLOCATE( znud(kshape(1),kshape(2),kshape(3)) )
      CALL nud_last( kvar, znud )
      CALL put_field( TRIM(cnud(kvar)), kt, znud )
   END SUBROUTINE put_nudging


   SUBROUTINE get_field( cdname, kt, pf )
      !! mlb_get of one received field, zero when &nammlb does not receive it
      CHARACTER(len=*)          , INTENT(in   ) ::   cdname
      INTEGER                   , INTENT(in   ) ::   kt
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pf
      INTEGER ::   istat
      IF( .NOT. ANY( cn_mlb_rcv == cdname ) ) THEN
         pf(:,:,:) = 0._wp
         RETURN
      ENDIF
      IF( ln_mlb_hls2 ) THEN   ! NEMO 4.2 array: the library fills the interior, zero on the land level
         CALL hls2_alloc( SIZE(pf, 3) )
         zhls2(:,:,:) = ieee_value( 1._wp, ieee_quiet_nan )
         zhls2(2:jpi+1,2:jpj+1,1:npk) = pf(:,:,1:npk)
         CALL mlb_get( cdname, kt, zhls2, istat )
         CALL inf_check( istat, 'inf_get: mlb_get '//cdname//' (halo 2, jpk levels)' )
         IF( ANY( ABS( zhls2(3:jpi,3:jpj,npk+1) ) > 0._wp ) .OR.                    &
            & ANY( ieee_is_nan( zhls2(3:jpi,3:jpj,npk+1) ) ) )                       &
            &   CALL ctl_stop( 'inf_get: mlb_get '//cdname//': the land level jpk is not zero' )
         pf(:,:,1:npk) = zhls2(2:jpi+1,2:jpj+1,1:npk)
         RETURN
      ENDIF
      CALL mlb_get( cdname, kt, pf, istat, halo=1 )
      CALL inf_check( istat, 'inf_get: mlb_get '//cdname )
   END SUBROUTINE get_field


   SUBROUTINE hls2_alloc( kpk )
      !! the NEMO 4.2 copy of ln_mlb_hls2: (jpi+2, jpj+2, jpk+1), halo 2, last level land
      INTEGER, INTENT(in) ::   kpk   ! levels of the toy's arrays
      IF( .NOT. ALLOCATED(zhls2) )   ALLOCATE( zhls2(jpi+2,jpj+2,kpk+1) )
   END SUBROUTINE hls2_alloc


   CHARACTER(len=1) FUNCTION point_of( cdname )
      !! the C-grid point of a toy field or tendency (u U, v V, h T)
      CHARACTER(len=*), INTENT(in) ::   cdname
      INTEGER ::   jf
      point_of = 'T'
      DO jf = 1, jpfld
         IF( cdname == cfld(jf) .OR. cdname == ctnd(jf) .OR. cdname == cnud(jf) )   point_of = cpnt(jf)
      END DO
   END FUNCTION point_of


   SUBROUTINE inproc( px, pout, cdnat )
      !! the in-process closure of one field (cdnat: its grid point)
      REAL(wp), DIMENSION(:,:,:), INTENT(in   ) ::   px
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pout
      CHARACTER(len=1)          , INTENT(in   ) ::   cdnat
      SELECT CASE( cn_mlb_inproc )
      CASE( 'laplacian' )   ;   CALL inc_laplacian( px, rn_mlb_coef, pout )
      CASE( 'smooth3'   )   ;   CALL inc_smooth3( px, rn_mlb_coef, pout, zwa, zwb, cdnat )
      END SELECT
   END SUBROUTINE inproc


   LOGICAL FUNCTION rst_is_warm()
      !!------------------------------------------------------------------
      !! restarted with a closure: can the coupling's state be given back? When it
      !! cannot, the coupling starts cold (schedule from nn_it000, zero tendencies
      !! until the first outputs): say so, loudly, before the first step
      !!------------------------------------------------------------------
      CHARACTER(len=lc) ::   ccold
      !!------------------------------------------------------------------
      rst_is_warm = .FALSE.
      IF( .NOT. ln_rstart .OR. .NOT. ( ln_mlb .OR. ALLOCATED(ztend) ) )   RETURN
      WRITE(ccold,'(a,i0,a,i0,a)') 'the coupling starts cold at step ', nn_it000, ' (exchanges every ',   &
         &   nn_mlb_every, ' steps from it, zero tendencies until the first outputs): this run differs '//   &
         &   'from one done in one go'
      IF( .NOT. ln_mlb_rst ) THEN
         CALL ctl_warn( 'inf_def: &nammlb ln_mlb_rst = .false.: '//TRIM(ccold) )
      ELSEIF( .NOT. llrst_in ) THEN
         CALL ctl_warn( 'inf_def: the restart '//TRIM(cn_ocerst_in)//' holds no coupling state '//   &
            &           '(written by a run without closures): '//TRIM(ccold) )
      ELSE
         rst_is_warm = .TRUE.
      ENDIF
   END FUNCTION rst_is_warm


   SUBROUTINE rst_restore
      !!------------------------------------------------------------------
      !! after mlb_enddef: the saved outputs back into the library; whatever the
      !! restart lacks for this run's schedule is said with a warning
      !!------------------------------------------------------------------
      INTEGER ::   jf, istat, iorigin, ievery, ilag, inpend
      CHARACTER(len=lc) ::   cmsg
      !!------------------------------------------------------------------
      CALL mlb_get_schedule( iorigin, ievery, ilag, inpend, istat )
      CALL inf_check( istat, 'inf_def: mlb_get_schedule' )
      CALL rst_warn_schedule( ievery, ilag )
      DO jf = 1, jpfld
         IF( .NOT. ANY( cn_mlb_rcv == ctnd(jf) ) )   CYCLE
         IF( llrst_slot(jf,1) ) THEN
            CALL mlb_load_outputs( TRIM(ctnd(jf)), MLB_HELD, zrst(:,:,:,jf,1), istat, halo=1 )
            CALL inf_check( istat, 'inf_def: mlb_load_outputs '//TRIM(ctnd(jf)) )
         ELSE
            WRITE(cmsg,'(a,i0,a)') 'inf_def: the restart holds no outputs of '//TRIM(ctnd(jf))//   &
               &                   ': zero until the first exchange after step ', nn_it000 - 1, '; this run '//   &
               &                   'differs from one done in one go'
            CALL ctl_warn( cmsg )
         ENDIF
         IF( ilag /= 1 )   CYCLE
         IF( llrst_slot(jf,2) ) THEN
            CALL mlb_load_outputs( TRIM(ctnd(jf)), MLB_PENDING, zrst(:,:,:,jf,2), istat, halo=1 )
            CALL inf_check( istat, 'inf_def: mlb_load_outputs '//TRIM(ctnd(jf)) )
         ELSE
            CALL ctl_warn( 'inf_def: lag 1, but the restart holds no outputs of '//TRIM(ctnd(jf))//   &
               &           ' in flight: the first exchange gives the held ones again; this run differs '//   &
               &           'from one done in one go' )
         ENDIF
      END DO
   END SUBROUTINE rst_restore


   SUBROUTINE rst_restore_inproc
      !! the in-process closure: its schedule's origin and the outputs it held
      INTEGER ::   jf
      CALL rst_warn_schedule( nn_mlb_every, 0 )
      nkt0 = nrst_origin
      DO jf = 1, jpfld
         IF( .NOT. lltend(jf) )   CYCLE
         IF( llrst_slot(jf,1) ) THEN
            ztend(:,:,:,jf) = zrst(:,:,:,jf,1)
         ELSE
            CALL ctl_warn( 'inf_def: the restart holds no outputs of '//TRIM(ctnd(jf))//   &
               &           ': zero until the first exchange; this run differs from one done in one go' )
         ENDIF
      END DO
   END SUBROUTINE rst_restore_inproc


   SUBROUTINE rst_warn_schedule( kevery, klag )
      !! the restart was written with another every or lag than this run's
      INTEGER, INTENT(in) ::   kevery, klag
      CHARACTER(len=lc) ::   cmsg
      IF( kevery == nrst_every .AND. klag == nrst_lag )   RETURN
      WRITE(cmsg,'(a,4(i0,a))') 'inf_def: the restart was written with every ', nrst_every, ' and lag ', nrst_lag,   &
         &   ', this run has every ', kevery, ' and lag ', klag, ': the saved outputs are given back where they '//   &
         &   'fit; this run differs from one done in one go'
      CALL ctl_warn( cmsg )
   END SUBROUTINE rst_warn_schedule


   SUBROUTINE inf_check( kstatus, cdwhat, ld_all )
      !! stop the run with the library's message when an mlbridge call failed
      INTEGER          , INTENT(in) ::   kstatus
      CHARACTER(len=*) , INTENT(in) ::   cdwhat
      LOGICAL, OPTIONAL, INTENT(in) ::   ld_all   ! the same error on every rank
      CHARACTER(len=4096) ::   clerr
      IF( kstatus == MLB_OK )   RETURN
      CALL mlb_error_message( clerr )
      CALL ctl_stop( cdwhat//': '//TRIM(clerr), ld_all )
   END SUBROUTINE inf_check


   SUBROUTINE nammlb_read( cdfile, cdmsg )
      !!------------------------------------------------------------------
      !! read &nammlb from cdfile; cdmsg: '' or why it failed (block absent from
      !! namelist_cfg is fine, as for every block)
      !!------------------------------------------------------------------
      CHARACTER(len=*), INTENT(in ) ::   cdfile
      CHARACTER(len=*), INTENT(out) ::   cdmsg
      INTEGER ::   inum, ios
      CHARACTER(len=lc) ::   cliom
      NAMELIST/nammlb/ ln_mlb, cn_mlb_snd, cn_mlb_rcv, nn_mlb_lev, nn_mlb_every, ln_mlb_rst
      !!------------------------------------------------------------------
      cdmsg = ''
      cliom = ''
      OPEN( NEWUNIT=inum, FILE=cdfile, STATUS='old', ACTION='read', IOSTAT=ios, IOMSG=cliom )
      IF( ios /= 0 ) THEN
         cdmsg = 'cannot open '//TRIM(cdfile)//': '//TRIM(cliom)
         RETURN
      ENDIF
      READ( inum, nammlb, IOSTAT=ios, IOMSG=cliom )
      CLOSE( inum )
      IF( ios == 0 )   RETURN
      IF( ios < 0 ) THEN
         IF( cdfile /= 'namelist_cfg' )   cdmsg = 'namelist block &nammlb not found in '//TRIM(cdfile)
         RETURN
      ENDIF
      cdmsg = 'misspelled or wrong entry in namelist block &nammlb of '//TRIM(cdfile)//': '//TRIM(cliom)
   END SUBROUTINE nammlb_read


   SUBROUTINE nammlb_check( kpk )
      !! refuse wrong &nammlb values before the first step, naming entry and value
      INTEGER, INTENT(in) ::   kpk
      INTEGER ::   jf
      CHARACTER(len=lc) ::   cmsg
      IF( nn_mlb_every < 1 ) THEN
         WRITE(cmsg,'(a,i0,a)') 'nammlb: nn_mlb_every = ', nn_mlb_every, ' must be >= 1'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      DO jf = 1, jpsnd
         IF( LEN_TRIM(cn_mlb_snd(jf)) > 0 .AND. .NOT. ( ANY( cfld == cn_mlb_snd(jf) ) .OR. ANY( cnud == cn_mlb_snd(jf) ) ) )   &
            &   CALL ctl_stop( 'nammlb: cn_mlb_snd = "'//TRIM(cn_mlb_snd(jf))//'": the toy sends u, v, h, u_nud, v_nud '// &
            &                  'or h_nud', ld_all=.TRUE. )
         IF( LEN_TRIM(cn_mlb_snd(jf)) > 0 .AND. COUNT( cn_mlb_snd == cn_mlb_snd(jf) ) > 1 )                 &
            &   CALL ctl_stop( 'nammlb: cn_mlb_snd names "'//TRIM(cn_mlb_snd(jf))//'" twice', ld_all=.TRUE. )
         IF( nn_mlb_lev(jf) < 0 .OR. nn_mlb_lev(jf) > kpk ) THEN
            WRITE(cmsg,'(a,i0,a,i0,a,i0,a)') 'nammlb: nn_mlb_lev(', jf, ') = ', nn_mlb_lev(jf),   &
               &                              ' must be 0 (all) to nn_nz = ', kpk, ' levels'
            CALL ctl_stop( cmsg, ld_all=.TRUE. )
         ENDIF
      END DO
      DO jf = 1, jpfld
         IF( LEN_TRIM(cn_mlb_rcv(jf)) > 0 .AND. .NOT. ANY( ctnd == cn_mlb_rcv(jf) ) )                       &
            &   CALL ctl_stop( 'nammlb: cn_mlb_rcv = "'//TRIM(cn_mlb_rcv(jf))//'": the toy receives u_tend, '// &
            &                  'v_tend or h_tend', ld_all=.TRUE. )
         IF( LEN_TRIM(cn_mlb_rcv(jf)) > 0 .AND. COUNT( cn_mlb_rcv == cn_mlb_rcv(jf) ) > 1 )                 &
            &   CALL ctl_stop( 'nammlb: cn_mlb_rcv names "'//TRIM(cn_mlb_rcv(jf))//'" twice', ld_all=.TRUE. )
      END DO
   END SUBROUTINE nammlb_check


   SUBROUTINE early_stop( cdmsg, ld_each )
      !!------------------------------------------------------------------
      !! fatal error before mpp_start (no model communicator, no ocean.output):
      !! ld_each: every rank writes its message; else world rank 0 writes it and the
      !! others wait for its abort. Then MPI_Abort(MPI_COMM_WORLD, 1).
      !!------------------------------------------------------------------
      CHARACTER(len=*), INTENT(in) ::   cdmsg
      LOGICAL         , INTENT(in) ::   ld_each
      INTEGER  ::   irank
      REAL(wp) ::   zt0
      CALL MPI_Comm_rank( MPI_COMM_WORLD, irank )
      IF( ld_each .OR. irank == 0 ) THEN
         WRITE(error_unit,'(a)') ' E R R O R : '//TRIM(cdmsg)
         FLUSH(error_unit)
      ELSE
         zt0 = MPI_Wtime()   ! no collective here: the servers are not in it
         DO WHILE( MPI_Wtime() - zt0 < 5._wp )
         END DO
      ENDIF
      CALL MPI_Abort( MPI_COMM_WORLD, 1 )
      STOP 1   ! not reached
   END SUBROUTINE early_stop

   !!======================================================================
END MODULE infmod
