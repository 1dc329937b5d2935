MODULE nemogcm
   !!======================================================================
   !!                       ***  MODULE  nemogcm  ***
   !! toy_nemo :  the model driver: initialisation, time loop, end
   !!======================================================================
   !!   nemo_gcm  : the whole run (time loop, or the offline tendency
   !!               diagnostic of given states when &namtend ln_tend)
   !!   nemo_init : namelists, decomposition, grid, state (rest or restart)
   !!   istate    : state at rest, optional Gaussian bump of h1
   !!----------------------------------------------------------------------
   USE mpi_f08       , ONLY : MPI_Comm, MPI_Barrier, MPI_Wtime
   USE par_kind      , ONLY : wp
   USE lib_mpp       , ONLY : mpp_start, mpp_stop, mpi_comm_oce, lwp, numout
   USE in_out_manager, ONLY : io_init, nn_it000, nn_itend, ln_rstart
   USE usrdef_nam    , ONLY : usr_def_nam, nn_nx, nn_ny, nn_nz, nn_perio, rn_htot, rn_bump
   USE mppini        , ONLY : mpp_init, jpi, jpj
   USE lbclnk        , ONLY : lbc_init, lbc_lnk
   USE domain        , ONLY : dom_init, tmask, glamt, gphit, rLx, rLy
   USE oce           , ONLY : oce_alloc, jpk, hn, un, vn
   USE sbcwnd        , ONLY : sbc_init
   USE ldfdyn        , ONLY : ldf_init
   USE dyn           , ONLY : dyn_init
   USE iom           , ONLY : iom_init
   USE diawri        , ONLY : dia_wri_init, dia_wri_final
   USE diatend       , ONLY : dia_tend_init, dia_tend, ln_tend
   USE rst           , ONLY : rst_read
   USE infmod        , ONLY : inf_init, inf_def, inf_final
   USE nudging       , ONLY : nud_init
   USE step          , ONLY : stp

   IMPLICIT NONE
   PRIVATE

   PUBLIC   nemo_gcm   ! called by the toy_nemo program

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE nemo_gcm
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nemo_gcm  ***
      !! ** Purpose :   run the model from nn_it000 to nn_itend; rank 0 logs the
      !!                wall time of the step loop alone (start-up and I/O set-up excluded)
      !!------------------------------------------------------------------
      INTEGER  ::   kt
      REAL(wp) ::   zt0, zt1
      !!------------------------------------------------------------------
      CALL nemo_init
      IF( ln_tend ) THEN                ! offline diagnostic: no time step at all
         CALL dia_tend
      ELSE
         CALL MPI_Barrier( mpi_comm_oce )
         zt0 = MPI_Wtime()
         DO kt = nn_it000, nn_itend
            CALL stp( kt )
         END DO
         CALL MPI_Barrier( mpi_comm_oce )
         zt1 = MPI_Wtime()
         IF( lwp ) THEN
            WRITE(numout,*)
            WRITE(numout,'(a,i10,a,f14.6,a)') ' nemo_gcm: step loop of ', nn_itend - nn_it000 + 1,   &
               &                              ' steps, wall time ', zt1 - zt0, ' s'
         ENDIF
      ENDIF
      CALL dia_wri_final
      CALL inf_final
      CALL mpp_stop
   END SUBROUTINE nemo_gcm


   SUBROUTINE nemo_init
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nemo_init  ***
      !! ** Purpose :   everything before the first step; every namelist value is
      !!                checked here, so a wrong one stops the run before any step
      TYPE(MPI_Comm) ::   icomm   ! the model's communicator (from mlb_init when coupled)
      !!------------------------------------------------------------------
      CALL inf_init( icomm )            ! &nammlb; coupled: split MPI_COMM_WORLD with the servers
      CALL mpp_start( icomm )           ! MPI, ocean.output, on the model's own communicator
      CALL io_init                      ! &namrun
      CALL dia_tend_init                ! &namtend
      CALL usr_def_nam                  ! &namusr_def
      CALL mpp_init( nn_nx, nn_ny, nn_perio )   ! &nammpp, decomposition
      CALL lbc_init( nn_nz )
      CALL dom_init                     ! &namdom, grid, masks, Coriolis
      CALL oce_alloc( jpi, jpj, nn_nz )
      CALL sbc_init                     ! wind stress
      CALL ldf_init
      CALL dyn_init( nn_nz )
      CALL iom_init( nn_nz )
      IF( ln_tend ) THEN
         CONTINUE                       ! states come from cn_tend_in, no output file
      ELSEIF( ln_rstart ) THEN
         CALL rst_read                  ! state and AB3 history of a previous run (and the coupling's state)
      ELSE
         CALL istate
      ENDIF
      CALL inf_def( nn_nz )             ! coupling hook: fields, handshake (or in-process closure); after
      !                                 ! rst_read, which found what the coupling needs to continue
      CALL nud_init( nn_nz, ln_tend )   ! &namnudge: truth file opened and checked (rank 0)
      IF( .NOT. ln_tend )   CALL dia_wri_init   ! output file created before the first step
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,'(a,i10,a,i10)') ' nemo_init: initialisation done, steps ', nn_it000, ' to ', nn_itend
         FLUSH(numout)
      ENDIF
   END SUBROUTINE nemo_init


   SUBROUTINE istate
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE istate  ***
      !! ** Purpose :   ocean at rest with equal layers, plus an optional Gaussian
      !!                bump of h1 at mid-basin (rn_bump, width Lx/16)
      !!------------------------------------------------------------------
      INTEGER  ::   ji, jj, jk
      REAL(wp) ::   zr2, zsig2
      !!------------------------------------------------------------------
      zsig2 = ( rLx / 16._wp )**2
      DO jk = 1, jpk
         DO jj = 1, jpj
            DO ji = 1, jpi
               hn(ji,jj,jk) = rn_htot / REAL(jpk, wp) * tmask(ji,jj)
            END DO
         END DO
      END DO
      DO jj = 1, jpj
         DO ji = 1, jpi
            zr2 = ( glamt(ji,jj) - 0.5_wp * rLx )**2 + ( gphit(ji,jj) - 0.5_wp * rLy )**2
            hn(ji,jj,1) = hn(ji,jj,1) + rn_bump * EXP( - 0.5_wp * zr2 / zsig2 ) * tmask(ji,jj)
         END DO
      END DO
      un(:,:,:) = 0._wp
      vn(:,:,:) = 0._wp
      CALL lbc_lnk( un, vn, hn )
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'istate : ocean at rest, equal layers'
         WRITE(numout,*) '~~~~~~'
      ENDIF
   END SUBROUTINE istate

   !!======================================================================
END MODULE nemogcm
