MODULE infmod_stub
   !!======================================================================
   !!                       ***  MODULE  infmod_stub  ***
   !! What a NEMO user adds to couple NEMO to mlbridge servers: a copy of
   !! this module (renamed infmod) and four calls, shown at the end.
   !!======================================================================
   !! This file is compiled with the library (never run) so that it keeps
   !! building. NEMO's own arrays are stood in for by arguments: in NEMO,
   !! use par_oce (jpi, jpj, jpk, jpiglo, jpjglo, nn_hls, Nis0, Nie0, Njs0,
   !! Nje0), dom_oce (nimpp, njmpp, tmask) and lib_mpp (ctl_stop). On any
   !! error the message of mlb_error_message is written before the stop.
   !!
   !!   inf_init  : called by nemogcm (nemo_init) BEFORE mpp_start: returns
   !!               the communicator NEMO must use (as cpl_init does with OASIS)
   !!   inf_def   : called by nemogcm after dom_init: grid, mask, fields, enddef
   !!   inf_put   : called by stp at the beginning of the time step
   !!   inf_get   : called by stp before the momentum trend is applied
   !!   inf_final : called by nemogcm (nemo_closefile) at the end
   !!   inf_rst_save : called by NEMO's restart writer at kt = nitrst: what the
   !!               coupling needs to continue bit for bit, for iom_rstput
   !!   inf_rst_load : restarted run, after inf_def, before the first step:
   !!               what inf_rst_save gave, read back with iom_get
   !!----------------------------------------------------------------------
   USE, INTRINSIC :: iso_fortran_env, ONLY: wp => real64, int32, error_unit
   USE mpi_f08 , ONLY: MPI_Abort, MPI_COMM_WORLD
   USE mlbridge, ONLY: mlb_init, mlb_def_grid, mlb_def_field, mlb_enddef, mlb_put, mlb_get, &
      &                mlb_finalize, mlb_error_message, MLB_SEND, MLB_RECV, MLB_OK, &
      &                mlb_def_restart, mlb_get_schedule, mlb_save_outputs, mlb_load_outputs, &
      &                MLB_HELD, MLB_PENDING
   IMPLICIT NONE
   PRIVATE

   PUBLIC inf_init    ! called by nemogcm.F90 before mpp_start
   PUBLIC inf_def     ! called by nemogcm.F90 after dom_init
   PUBLIC inf_put     ! called by step.F90
   PUBLIC inf_get     ! called by step.F90
   PUBLIC inf_final   ! called by nemogcm.F90
   PUBLIC inf_rst_save   ! called by the restart writer (rst_wri in NEMO's restart.F90)
   PUBLIC inf_rst_load   ! called by nemogcm.F90 after inf_def, in a restarted run

   INTEGER, PARAMETER :: nn_every = 1   ! exchange every time step (must match coupling.toml)

CONTAINS

   SUBROUTINE inf_init( kcomm )
      !!----------------------------------------------------------------------
      !! Split MPI_COMM_WORLD between NEMO and the servers; NEMO then runs on
      !! kcomm:   CALL inf_init( ilocalcomm ) ; CALL mpp_start( ilocalcomm )
      !!----------------------------------------------------------------------
      INTEGER, INTENT(out) :: kcomm
      INTEGER :: istat
      CALL mlb_init( kcomm, istat )
      CALL inf_check( istat, 'inf_init: mlb_init' )
   END SUBROUTINE inf_init


   SUBROUTINE inf_def( kpiglo, kpjglo, kimpp, kjmpp, kpi, kpj, kpk, ptmask, krst_origin )
      !!----------------------------------------------------------------------
      !! Global grid (jpiglo, jpjglo), interior box of this rank: first point
      !! (nimpp + nn_hls, njmpp + nn_hls) ... in NEMO 4.2 terms, kpi = Nie0-Nis0+1,
      !! and the surface land mask of the interior. Fields: u, v sent; the
      !! closure's outputs received (names as in coupling.toml). In a restarted
      !! run, krst_origin is the 'mlb_origin' of the restart (inf_rst_save): the
      !! exchanges keep the first run's steps.
      !!----------------------------------------------------------------------
      INTEGER, INTENT(in) :: kpiglo, kpjglo, kimpp, kjmpp, kpi, kpj, kpk
      REAL(wp), INTENT(in) :: ptmask(:,:)   ! (kpi, kpj) interior, 1 ocean / 0 land
      INTEGER, OPTIONAL, INTENT(in) :: krst_origin
      INTEGER :: istat
      CALL mlb_def_grid( kpiglo, kpjglo, kimpp, kjmpp, kpi, kpj, istat, mask=INT(ptmask, int32) )
      CALL inf_check( istat, 'inf_def: mlb_def_grid' )
      CALL mlb_def_field( 'u', kpk, MLB_SEND, nn_every, istat )
      CALL inf_check( istat, 'inf_def: mlb_def_field u' )
      CALL mlb_def_field( 'v', kpk, MLB_SEND, nn_every, istat )
      CALL inf_check( istat, 'inf_def: mlb_def_field v' )
      CALL mlb_def_field( 'u_tend', kpk, MLB_RECV, nn_every, istat )
      CALL inf_check( istat, 'inf_def: mlb_def_field u_tend' )
      CALL mlb_def_field( 'v_tend', kpk, MLB_RECV, nn_every, istat )
      CALL inf_check( istat, 'inf_def: mlb_def_field v_tend' )
      IF( PRESENT(krst_origin) ) THEN
         CALL mlb_def_restart( krst_origin, istat )
         CALL inf_check( istat, 'inf_def: mlb_def_restart' )
      ENDIF
      CALL mlb_enddef( istat )             ! the handshake: a mismatch stops here, with both values
      CALL inf_check( istat, 'inf_def: mlb_enddef' )
   END SUBROUTINE inf_def


   SUBROUTINE inf_put( kt, pu, pv )
      !!----------------------------------------------------------------------
      !! Send u and v (NEMO arrays (jpi, jpj, jpk) with their nn_hls halo: the
      !! halo is deduced from the shape) early in the step.
      !!----------------------------------------------------------------------
      INTEGER, INTENT(in) :: kt
      REAL(wp), INTENT(in) :: pu(:,:,:), pv(:,:,:)
      INTEGER :: istat
      CALL mlb_put( 'u', kt, pu, istat )
      CALL inf_check( istat, 'inf_put: u' )
      CALL mlb_put( 'v', kt, pv, istat )
      CALL inf_check( istat, 'inf_put: v' )
   END SUBROUTINE inf_put


   SUBROUTINE inf_get( kt, pu_tend, pv_tend )
      !!----------------------------------------------------------------------
      !! Receive the tendencies late in the step (the later, the more the
      !! servers' work overlaps NEMO's); add them to the momentum trends:
      !!    ua(:,:,:) = ua(:,:,:) + pu_tend(:,:,:) * umask(:,:,:)
      !!----------------------------------------------------------------------
      INTEGER, INTENT(in) :: kt
      REAL(wp), INTENT(inout) :: pu_tend(:,:,:), pv_tend(:,:,:)
      INTEGER :: istat
      CALL mlb_get( 'u_tend', kt, pu_tend, istat )
      CALL inf_check( istat, 'inf_get: u_tend' )
      CALL mlb_get( 'v_tend', kt, pv_tend, istat )
      CALL inf_check( istat, 'inf_get: v_tend' )
   END SUBROUTINE inf_get


   SUBROUTINE inf_final
      INTEGER :: istat
      CALL mlb_finalize( istat )
      CALL inf_check( istat, 'inf_final: mlb_finalize' )
   END SUBROUTINE inf_final


   SUBROUTINE inf_rst_save( korigin, kpending, pu_held, pv_held, pu_pend, pv_pend )
      !!----------------------------------------------------------------------
      !! At a restart step, after inf_get: the schedule's origin, the outputs
      !! held between exchanges and, when kpending = 1 (lag 1), the outputs in
      !! flight (waited for here). NEMO's writer then stores them, e.g.
      !!    CALL iom_rstput( kt, nitrst, numrow, 'mlb_origin', REAL(korigin, wp) )
      !!    CALL iom_rstput( kt, nitrst, numrow, 'mlb_held_u_tend', pu_held )
      !!    IF( kpending > 0 ) CALL iom_rstput( kt, nitrst, numrow, 'mlb_pending_u_tend', pu_pend )
      !!----------------------------------------------------------------------
      INTEGER, INTENT(out) :: korigin, kpending
      REAL(wp), INTENT(inout) :: pu_held(:,:,:), pv_held(:,:,:), pu_pend(:,:,:), pv_pend(:,:,:)
      INTEGER :: istat, ievery, ilag
      CALL mlb_get_schedule( korigin, ievery, ilag, kpending, istat )
      CALL inf_check( istat, 'inf_rst_save: mlb_get_schedule' )
      CALL mlb_save_outputs( 'u_tend', MLB_HELD, pu_held, istat )
      CALL inf_check( istat, 'inf_rst_save: u_tend' )
      CALL mlb_save_outputs( 'v_tend', MLB_HELD, pv_held, istat )
      CALL inf_check( istat, 'inf_rst_save: v_tend' )
      IF( kpending == 0 ) RETURN
      CALL mlb_save_outputs( 'u_tend', MLB_PENDING, pu_pend, istat )
      CALL inf_check( istat, 'inf_rst_save: u_tend in flight' )
      CALL mlb_save_outputs( 'v_tend', MLB_PENDING, pv_pend, istat )
      CALL inf_check( istat, 'inf_rst_save: v_tend in flight' )
   END SUBROUTINE inf_rst_save


   SUBROUTINE inf_rst_load( kpending, pu_held, pv_held, pu_pend, pv_pend )
      !!----------------------------------------------------------------------
      !! A restarted run (inf_def was given krst_origin), before the first step:
      !! the arrays inf_rst_save gave, read back from the restart (iom_get), on
      !! any decomposition; kpending = 1 when the restart holds the outputs in flight.
      !!----------------------------------------------------------------------
      INTEGER, INTENT(in) :: kpending
      REAL(wp), INTENT(in) :: pu_held(:,:,:), pv_held(:,:,:), pu_pend(:,:,:), pv_pend(:,:,:)
      INTEGER :: istat
      CALL mlb_load_outputs( 'u_tend', MLB_HELD, pu_held, istat )
      CALL inf_check( istat, 'inf_rst_load: u_tend' )
      CALL mlb_load_outputs( 'v_tend', MLB_HELD, pv_held, istat )
      CALL inf_check( istat, 'inf_rst_load: v_tend' )
      IF( kpending == 0 ) RETURN
      CALL mlb_load_outputs( 'u_tend', MLB_PENDING, pu_pend, istat )
      CALL inf_check( istat, 'inf_rst_load: u_tend in flight' )
      CALL mlb_load_outputs( 'v_tend', MLB_PENDING, pv_pend, istat )
      CALL inf_check( istat, 'inf_rst_load: v_tend in flight' )
   END SUBROUTINE inf_rst_load


   SUBROUTINE inf_check( kstatus, cdwhat )
      !!----------------------------------------------------------------------
      !! On a non-zero status: the library's message (it never prints nor stops
      !! by itself), then stop the whole job. In NEMO:
      !!    CALL mlb_error_message( cmsg ) ; CALL ctl_stop( 'STOP', cdwhat, cmsg )
      !!----------------------------------------------------------------------
      INTEGER, INTENT(in) :: kstatus
      CHARACTER(len=*), INTENT(in) :: cdwhat
      CHARACTER(len=4096) :: cmsg
      IF( kstatus == MLB_OK ) RETURN
      CALL mlb_error_message( cmsg )
      WRITE(error_unit,'(a,i0,a)') ' E R R O R : '//cdwhat//' (status ', kstatus, '): '//TRIM(cmsg)
      FLUSH(error_unit)
      CALL MPI_Abort( MPI_COMM_WORLD, 1 )   ! every rank, the servers too: an MPMD job ends at once
   END SUBROUTINE inf_check

   !!======================================================================
END MODULE infmod_stub
