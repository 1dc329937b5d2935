!!======================================================================
!!                       ***  MODULE  mlbridge  ***
!! Coupling library: exchange domain-decomposed 3D fields between a
!!                   Fortran model and mlbridge Python inference servers
!!======================================================================
!! The model and the servers run as one MPMD job. MPI_COMM_WORLD is split
!! by colour; at mlb_enddef every model rank reports its grid, box and
!! fields to server rank 0, which checks them and answers with a route
!! table: for each server, the boxes to send and the boxes received back.
!! All policy (planning, checks, NaN handling) lives in Python; this module
!! only executes the table. See docs/coupling.md for the protocol.
!!
!! Conventions
!!   - every public routine returns a status (0 = MLB_OK); the text of the
!!     last error is given by mlb_error_message. Nothing here stops the
!!     program or prints.
!!   - arrays are (i, j, k) on this rank's interior box, optionally with a
!!     symmetric halo of width h around it (argument halo, or deduced from
!!     the shape): the interior is array(h+1:h+nx_loc, h+1:h+ny_loc, 1:nlev).
!!     Any h >= 0 (NEMO 4.2: nn_hls = 2). Extra levels beyond nlev (NEMO's
!!     land level jpk of a field declared with jpkm1 levels) are never read
!!     by mlb_put; mlb_get sets their interior to zero.
!!   - step numbers: fields are exchanged on the steps kt where
!!     MOD(kt - kt_origin, every) == 0; the origin kt_origin is the first kt
!!     given to mlb_put, or, in a run that continues another from a restart,
!!     the origin of the first run (mlb_def_restart), so that the schedule
!!     keeps its phase across restarts.
!!   - restarts: at the model's restart steps, mlb_get_schedule and
!!     mlb_save_outputs give what the model stores in its restart file (the
!!     origin, the outputs held between exchanges and, with lag 1, those in
!!     flight); the restarted run gives them back with mlb_def_restart and
!!     mlb_load_outputs, and continues bit for bit (docs/coupling.md).
!!   - one coupling per process (the variable cpl below, as OASIS).
!!   - transport: the handshake always goes over MPI; the fields then move
!!     in MPI messages (transport = "mpi") or through OASIS3-MCT when the
!!     servers' reply says transport = "oasis" (a library built with it).
!!
!! This module is the whole public surface. Behind it, by job:
!!   mlbridge_state         (module)    the state type, status codes
!!   mlbridge_handshake     (submodule) world join, report, reply
!!   mlbridge_transfer      (submodule) MPI messages, buffers, waits
!!   mlbridge_backend       (submodule) OASIS3-MCT, or a refusal when the
!!                          library is built without it (CMake picks the file)
!! The wire constants stay here, where tests/test_wire_constants.py reads
!! them, and the submodules see them by host association.
!!----------------------------------------------------------------------
!!   mlb_init          : split MPI_COMM_WORLD, return the model communicator
!!   mlb_def_grid      : global grid, this rank's interior box, land mask, face convention
!!   mlb_def_field     : declare a field sent to or received from the servers (and its C-grid point)
!!   mlb_def_restart   : this run continues a coupled run (schedule origin)
!!   mlb_enddef        : handshake with the servers, receive the route table
!!   mlb_put           : send a field at step kt (when due)
!!   mlb_get           : receive a field at step kt (the last outputs between exchanges)
!!   mlb_get_schedule  : origin, every, lag, outputs in flight (restart writer)
!!   mlb_save_outputs  : outputs held / in flight into an array (restart writer)
!!   mlb_load_outputs  : outputs held / in flight from an array (restart reader)
!!   mlb_finalize      : flush, say goodbye, finalize MPI if mlb_init started it
!!   mlb_error_message : text of the last error
!!----------------------------------------------------------------------
module mlbridge
   use, intrinsic :: iso_fortran_env, only: real32, real64, int32, int64
   use, intrinsic :: iso_c_binding, only: c_int
   use mpi_f08, only: MPI_Comm, MPI_Status, MPI_Request, MPI_SUCCESS, MPI_Initialized, MPI_Init, &
      &               MPI_Finalized, MPI_Finalize, MPI_Wtime
   use mlbridge_state, only: mlb_coupling_t, mlb_field_t, set_error, find_field, is_due, lay_out_levels, &
      &                      MLB_SEND, MLB_RECV, MLB_OK, MLB_ERR_CALL, MLB_ERR_ARG, MLB_ERR_MPI, &
      &                      MLB_ERR_TIMEOUT, MLB_ERR_REMOTE, MLB_ERR_OASIS, MLB_NAME_LEN, MAX_FIELDS, &
      &                      MLB_HELD, MLB_PENDING
   implicit none
   private

   public :: mlb_init          ! called by the model's coupling init (infmod: inf_init)
   public :: mlb_def_grid      ! called by the model's coupling init
   public :: mlb_def_field     ! called by the model's coupling init
   public :: mlb_def_restart   ! called by the model's coupling init, in a restarted run
   public :: mlb_enddef        ! called by the model's coupling init
   public :: mlb_put           ! called early in the model step (infmod: inf_put)
   public :: mlb_get           ! called late in the model step (infmod: inf_get)
   public :: mlb_get_schedule  ! called by the model's restart writer (infmod: inf_rst_info)
   public :: mlb_save_outputs  ! called by the model's restart writer (infmod: inf_rst_get)
   public :: mlb_load_outputs  ! called by the model's coupling init, in a restarted run
   public :: mlb_finalize      ! called at the end of the run (infmod: inf_final)
   public :: mlb_error_message ! called by the model after a non-zero status
   public :: mlb_wait_seconds  ! diagnostics: seconds this rank waited for the servers
   !! directions of mlb_def_field and status codes (defined in mlbridge_state)
   public :: MLB_SEND, MLB_RECV
   public :: MLB_OK, MLB_ERR_CALL, MLB_ERR_ARG, MLB_ERR_MPI, MLB_ERR_TIMEOUT, MLB_ERR_REMOTE, MLB_ERR_OASIS
   public :: MLB_NAME_LEN
   public :: MLB_HELD, MLB_PENDING   ! the outputs a restart keeps

   !! protocol constants, shared with bridge/transport/mpi.py
   integer, parameter :: COLOUR_MODEL = 1, COLOUR_SERVER = 2
   integer, parameter :: PROTOCOL_VERSION = 2  ! must equal bridge.transport.mpi.PROTOCOL_VERSION
   integer, parameter :: TAG_REPORT = 7101, TAG_MASK = 7102, TAG_REPLY = 7103, TAG_REPLY_TEXT = 7104
   integer, parameter :: TAG_FIELDS = 7201, TAG_DONE = 7202, TAG_OUTPUTS = 7203, TAG_ERROR = 7204
   integer, parameter :: NDONE = 4            ! reals in the goodbye message (its head)
   !! transport mpi: the goodbye goes on with [nsteplog, steplog(STEPLOG_RECORD, nsteplog)]
   integer, parameter :: STEPLOG_RECORD = 6   ! [kt, put start, put end, get start, get end, wait s]
   integer, parameter :: MAX_STEPLOG = 20000  ! exchanges in the timeline (the first ones)
   integer, parameter :: TRANSPORT_OASIS = 1  ! last word of the handshake reply (0: mpi)
   integer, parameter :: JOIN_MAGIC = 7100001 ! both sides all-reduce [JOIN_MAGIC, -JOIN_MAGIC] before the split
   !! waits poll busily (yielding the core) for SPIN_S, then sleep between polls: a large message
   !! moves in fragments that need both sides to poll, so sleeping early would stall transfers
   !! (the first TIGHT_S without even yielding: a yield on a busy node can hand the core away for a
   !! whole time slice, in the middle of a transfer that needs both sides)
   real(real64), parameter :: TIGHT_S = 2.e-3_real64   ! the default of cpl%tight_s (MLBRIDGE_YIELD_AFTER_S)
   real(real64), parameter :: SPIN_S = 0.5_real64
   integer, parameter :: MAX_SLEEP_US = 100

   !! the one coupling of this process; MPI reads and writes its buffers between calls
   type(mlb_coupling_t), save, target, asynchronous :: cpl

   interface mlb_put
      module procedure mlb_put_r8, mlb_put_r4
   end interface mlb_put
   interface mlb_get
      module procedure mlb_get_r8, mlb_get_r4
   end interface mlb_get

   interface
      function c_usleep(usec) bind(C, name='usleep') result(ierr)
         import :: c_int
         integer(c_int), value :: usec
         integer(c_int) :: ierr
      end function c_usleep
      function c_sched_yield() bind(C, name='sched_yield') result(ierr)
         import :: c_int
         integer(c_int) :: ierr
      end function c_sched_yield
   end interface

   !!----------------------------------------------------------------------
   !! internal routines, implemented in the submodules
   !!----------------------------------------------------------------------
   interface
      !! mlbridge_handshake.F90
      module subroutine join_world(cpl, mcomm, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         type(MPI_Comm), intent(out) :: mcomm
         integer, intent(out) :: status
      end subroutine join_world
      module subroutine send_report(cpl, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(out) :: status
      end subroutine send_report
      module subroutine receive_reply(cpl, reply, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, allocatable, intent(out) :: reply(:)
         integer, intent(out) :: status
      end subroutine receive_reply
      module subroutine decode_reply(cpl, reply, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: reply(:)
         integer, intent(out) :: status
      end subroutine decode_reply

      !! mlbridge_transfer.F90
      module subroutine allocate_buffers(cpl)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      end subroutine allocate_buffers
      module subroutine send_field(cpl, jf, kt, array, h, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: jf, kt, h
         real(real64), intent(in), target, asynchronous :: array(:,:,:)
         integer, intent(out) :: status
      end subroutine send_field
      module subroutine pack_field(cpl, jf, kt, array, h, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: jf, kt, h
         real(real64), intent(in) :: array(:,:,:)
         integer, intent(out) :: status
      end subroutine pack_field
      module subroutine complete_put(cpl, jf, kt, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: jf, kt
         integer, intent(out) :: status
      end subroutine complete_put
      module subroutine receive_outputs(cpl, kt, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: kt
         integer, intent(out) :: status
      end subroutine receive_outputs
      module subroutine unpack_outputs(cpl, jf, array, h, slot)
         type(mlb_coupling_t), intent(in), target, asynchronous :: cpl
         integer, intent(in) :: jf, h
         real(real64), intent(inout) :: array(:,:,:)
         integer, intent(in), optional :: slot
      end subroutine unpack_outputs
      module subroutine load_outputs(cpl, jf, slot, array, h)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: jf, slot, h
         real(real64), intent(in) :: array(:,:,:)
      end subroutine load_outputs
      module subroutine complete_receives(cpl, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(out) :: status
      end subroutine complete_receives
      module subroutine drain_transfers(cpl, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(out) :: status
      end subroutine drain_transfers
      module subroutine say_goodbye(cpl, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(out) :: status
      end subroutine say_goodbye
      module subroutine free_buffers(cpl)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      end subroutine free_buffers
      module subroutine wait_requests(cpl, reqs, what, status, kt)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         type(MPI_Request), intent(inout), asynchronous :: reqs(:)
         character(len=*), intent(in) :: what
         integer, intent(out) :: status
         integer, intent(in), optional :: kt
      end subroutine wait_requests
      module subroutine probe_message(cpl, source, tag, what, st, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: source, tag
         character(len=*), intent(in) :: what
         type(MPI_Status), intent(out) :: st
         integer, intent(out) :: status
      end subroutine probe_message

      !! mlbridge_backend_oasis.F90 or mlbridge_backend_none.F90 (CMake: MLB_WITH_OASIS)
      module function backend_transports() result(names)
         character(len=:), allocatable :: names
      end function backend_transports
      module subroutine backend_start(cpl, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(out) :: status
      end subroutine backend_start
      module subroutine backend_put(cpl, jf, kt, pfield, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: jf, kt
         real(real64), intent(in) :: pfield(:,:,:)
         integer, intent(out) :: status
      end subroutine backend_put
      module subroutine backend_get(cpl, jf, kt, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: jf, kt
         integer, intent(out) :: status
      end subroutine backend_get
      module subroutine backend_take_lagged(cpl, kt, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(in) :: kt
         integer, intent(out) :: status
      end subroutine backend_take_lagged
      module subroutine backend_finish(cpl, status)
         type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
         integer, intent(out) :: status
      end subroutine backend_finish
   end interface

contains

   !!----------------------------------------------------------------------
   !!                          public routines
   !!----------------------------------------------------------------------

   subroutine mlb_init(model_comm, status)
      !!------------------------------------------------------------------
      !! Start MPI if needed, split MPI_COMM_WORLD by colour and learn which
      !! world ranks are servers. Collective over MPI_COMM_WORLD (the servers
      !! do the same). Before the split, every rank enters a non-blocking
      !! barrier on MPI_COMM_WORLD and polls it with the timeout, so that a
      !! job whose servers never start returns MLB_ERR_TIMEOUT, never hangs.
      !! model_comm: the model's own communicator (integer handle, as NEMO's
      !! mpi_comm_oce), to be used instead of the world.
      !! The timeout of every wait (default 600 s until the servers tell
      !! theirs) can be set with the environment variable MLBRIDGE_TIMEOUT_S.
      !!------------------------------------------------------------------
      integer, intent(out) :: model_comm
      integer, intent(out) :: status
      logical :: done
      integer :: ierr, ilen, istat
      type(MPI_Comm) :: mcomm
      character(len=64) :: env
      real(real64) :: tval

      model_comm = -1
      if (cpl%l_init) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_init: called twice', status); return
      end if
      call MPI_Initialized(done, ierr)
      if (.not. done) then
         call MPI_Init(ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(cpl, MLB_ERR_MPI, 'mlb_init: MPI_Init failed', status); return
         end if
         cpl%l_own_mpi = .true.
      end if
      call get_environment_variable('MLBRIDGE_TIMEOUT_S', env, ilen, istat)
      if (istat == 0 .and. ilen > 0) then
         read(env, *, iostat=istat) tval
         if (istat == 0 .and. tval > 0._real64) cpl%timeout_s = tval
      end if
      cpl%l_put_at_once = receiver_pulls()
      call get_environment_variable('MLBRIDGE_YIELD_AFTER_S', env, ilen, istat)
      if (istat == 0 .and. ilen > 0) then
         read(env, *, iostat=istat) tval
         if (istat == 0 .and. tval >= 0._real64) cpl%tight_s = tval
      end if
      call join_world(cpl, mcomm, status)
      if (status /= MLB_OK) return
      model_comm = mcomm%MPI_VAL
      cpl%l_init = .true.
      if (size(cpl%server_ranks) == 0) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_init: no mlbridge server rank in MPI_COMM_WORLD '// &
            & '(start the job with mlbridge run, or mpirun -np N model : -np M python -m bridge.server)', status)
         return
      end if
      status = MLB_OK
   end subroutine mlb_init


   subroutine mlb_def_grid(nx_glo_in, ny_glo_in, i0, j0, nx_loc_in, ny_loc_in, status, mask, faces)
      !!------------------------------------------------------------------
      !! Global grid nx_glo x ny_glo (T points) and this rank's interior box:
      !! nx_loc x ny_loc points starting at global index (i0, j0), 1-based
      !! (as NEMO's nimpp, njmpp). mask(nx_loc, ny_loc): optional land mask
      !! of the interior box (0 land, else ocean), handed to closures that ask.
      !! faces: optional face convention of the U and V points of index i, j:
      !! 'east' (default, NEMO: U(i) at i+1/2, V(j) at j+1/2), 'west'
      !! (MITgcm-like: U(i) at i-1/2, V(j) at j-1/2), or two words, the i face
      !! (east|west) then the j face (north|south), e.g. 'west north'.
      !!------------------------------------------------------------------
      integer, intent(in) :: nx_glo_in, ny_glo_in, i0, j0, nx_loc_in, ny_loc_in
      integer, intent(out) :: status
      integer(int32), intent(in), optional :: mask(:,:)
      character(len=*), intent(in), optional :: faces
      character(len=256) :: msg
      character(len=5) :: fi, fj

      if (.not. cpl%l_init .or. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_def_grid: call it after mlb_init and before mlb_enddef', status)
         return
      end if
      if (nx_glo_in < 1 .or. ny_glo_in < 1 .or. nx_loc_in < 1 .or. ny_loc_in < 1 .or. i0 < 1 .or. j0 < 1 &
         & .or. i0 + nx_loc_in - 1 > nx_glo_in .or. j0 + ny_loc_in - 1 > ny_glo_in) then
         write(msg, '(a,6(i0,a))') 'mlb_def_grid: box of ', nx_loc_in, ' x ', ny_loc_in, ' points at (', i0, &
            & ', ', j0, ') does not fit in the ', nx_glo_in, ' x ', ny_glo_in, ' grid'
         call set_error(cpl, MLB_ERR_ARG, msg, status); return
      end if
      if (present(mask)) then
         if (size(mask, 1) /= nx_loc_in .or. size(mask, 2) /= ny_loc_in) then
            write(msg, '(a,4(i0,a))') 'mlb_def_grid: mask is ', size(mask, 1), ' x ', size(mask, 2), &
               & ', the interior box is ', nx_loc_in, ' x ', ny_loc_in
            call set_error(cpl, MLB_ERR_ARG, msg, status); return
         end if
         if (allocated(cpl%land_mask)) deallocate(cpl%land_mask)
         allocate(cpl%land_mask(nx_loc_in, ny_loc_in))
         cpl%land_mask(:,:) = merge(1, 0, mask /= 0)
      end if
      fi = 'east'; fj = 'north'
      if (present(faces)) then
         call parse_faces(faces, fi, fj, status)
         if (status /= MLB_OK) return
      end if
      cpl%face_i = fi; cpl%face_j = fj
      cpl%nx_glo = nx_glo_in; cpl%ny_glo = ny_glo_in
      cpl%gi0 = i0 - 1; cpl%gj0 = j0 - 1
      cpl%nx_loc = nx_loc_in; cpl%ny_loc = ny_loc_in
      cpl%l_grid = .true.
      status = MLB_OK
   end subroutine mlb_def_grid


   subroutine mlb_def_field(name, nlev, direction, kevery, status, kind, grid)
      !!------------------------------------------------------------------
      !! Declare a 3D field of nlev levels sent (MLB_SEND) or received
      !! (MLB_RECV) every kevery steps. kind: real64 (default) or real32,
      !! the kind of the arrays given to mlb_put / mlb_get. grid: the
      !! Arakawa C-grid point the field lives on, 'T', 'U', 'V' or 'F'
      !! (where U and V sit: mlb_def_grid's faces); the servers check it
      !! against the closure's. Without it the field is taken as T and not
      !! checked. The name is the one coupling.toml uses.
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: nlev, direction, kevery
      integer, intent(out) :: status
      integer, intent(in), optional :: kind
      character(len=*), intent(in), optional :: grid
      integer :: ikind
      character(len=1) :: point

      if (.not. cpl%l_init .or. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_def_field: call it after mlb_init and before mlb_enddef', status)
         return
      end if
      ikind = real64
      if (present(kind)) ikind = kind
      if (len_trim(name) == 0 .or. len_trim(name) > MLB_NAME_LEN .or. index(trim(name), ' ') > 0) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: bad field name "'//trim(name)// &
            & '" (1 to 32 characters, no blanks)', status); return
      end if
      if (nlev < 1 .or. kevery < 1) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//' needs nlev >= 1 and every >= 1', &
            & status); return
      end if
      if (direction /= MLB_SEND .and. direction /= MLB_RECV) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)// &
            & ': direction must be MLB_SEND or MLB_RECV', status); return
      end if
      if (ikind /= real64 .and. ikind /= real32) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//': kind must be real64 or real32', &
            & status); return
      end if
      point = ' '
      if (present(grid)) then
         if (len_trim(grid) /= 1 .or. scan(grid, 'TUVFtuvf') /= 1) then
            call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//': grid "'//trim(grid)// &
               & '" is not a C-grid point (T, U, V or F)', status); return
         end if
         point = grid(1:1)
         if (point >= 'a') point = achar(iachar(point) - 32)
      end if
      if (find_field(cpl, name) > 0) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//' defined twice', status); return
      end if
      if (cpl%nfields == MAX_FIELDS) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_field: too many fields', status); return
      end if
      cpl%nfields = cpl%nfields + 1
      cpl%fields(cpl%nfields) = mlb_field_t(name=name, nlev=nlev, direction=direction, every=kevery, kind=ikind, &
         &                                  point=point)
      status = MLB_OK
   end subroutine mlb_def_field


   subroutine mlb_def_restart(kt_origin, status)
      !!------------------------------------------------------------------
      !! This run continues a coupled run from the model's restart file:
      !! exchanges stay on the steps where MOD(kt - kt_origin, every) == 0,
      !! kt_origin being the origin the first run used (mlb_get_schedule at
      !! its restart step, kept in the restart file), and the servers are told
      !! (a closure that keeps state it cannot save makes them refuse the run).
      !! Call it after mlb_init and before mlb_enddef; then, after mlb_enddef
      !! and before the first mlb_put, give back the saved outputs with
      !! mlb_load_outputs.
      !!------------------------------------------------------------------
      integer, intent(in) :: kt_origin
      integer, intent(out) :: status

      if (.not. cpl%l_init .or. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_def_restart: call it after mlb_init and before mlb_enddef', status)
         return
      end if
      if (kt_origin == -huge(1)) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_restart: kt_origin is not a step (-huge): '// &
            & 'give the origin mlb_get_schedule returned when the restart was written', status); return
      end if
      cpl%kt_origin = kt_origin
      cpl%l_restart = .true.
      status = MLB_OK
   end subroutine mlb_def_restart


   subroutine mlb_enddef(status)
      !!------------------------------------------------------------------
      !! The handshake: report grid, box and fields to server rank 0 and wait
      !! for its answer: the route table, or an error naming the field and both
      !! values (then status = MLB_ERR_REMOTE and the text is kept).
      !! Buffers for the whole run are allocated here.
      !!------------------------------------------------------------------
      integer, intent(out) :: status
      integer, allocatable :: reply(:)

      if (.not. cpl%l_init .or. .not. cpl%l_grid .or. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_enddef: call it once, after mlb_init and mlb_def_grid', status)
         return
      end if
      call send_report(cpl, status)
      if (status /= MLB_OK) return
      call receive_reply(cpl, reply, status)
      if (status /= MLB_OK) return
      call decode_reply(cpl, reply, status)
      if (status /= MLB_OK) return
      call lay_out_levels(cpl)
      if (cpl%l_oasis) then
         call backend_start(cpl, status)   ! a library built without OASIS3-MCT refuses here
         if (status /= MLB_OK) return
      end if
      call allocate_buffers(cpl)
      cpl%l_enddef = .true.
      status = MLB_OK
   end subroutine mlb_enddef


   subroutine mlb_put_r8(name, kt, array, status, halo)
      !!------------------------------------------------------------------
      !! Send field name at step kt. A no-op on steps where it is not due, or
      !! when no exchange uses it. Lag 0: one message per server straight from
      !! array (MPI datatype, no copy), and this call returns once the servers
      !! hold it. Lag 1: the field is copied into a send buffer; the put of the
      !! step's last field returns once the servers hold all of them (so that
      !! their work overlaps the rest of the model's step), or at once where the
      !! servers can pull the messages by themselves (receiver_pulls).
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real64), intent(in), target :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h
      logical :: skip
      real(real64) :: t0, m0, w0

      t0 = MPI_Wtime(); m0 = mono_s(); w0 = cpl%t_wait
      call begin_put(name, kt, shape(array), real64, halo, jf, h, skip, status)
      if (status /= MLB_OK .or. skip) return
      call put_due(jf, kt, array, h, status)
      cpl%t_put = cpl%t_put + (MPI_Wtime() - t0)
      call log_step(kt, 1, m0, w0)
   end subroutine mlb_put_r8


   subroutine mlb_put_r4(name, kt, array, status, halo)
      !! As mlb_put_r8 for real32 arrays: the interior travels as real64.
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real32), intent(in) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h, nl
      logical :: skip
      real(real64) :: t0, m0, w0
      real(real64), allocatable, target :: work(:,:,:)

      t0 = MPI_Wtime(); m0 = mono_s(); w0 = cpl%t_wait
      call begin_put(name, kt, shape(array), real32, halo, jf, h, skip, status)
      if (status /= MLB_OK .or. skip) return
      nl = cpl%fields(jf)%nlev
      allocate(work(cpl%nx_loc, cpl%ny_loc, nl))
      work(:,:,:) = real(array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, 1:nl), real64)
      call put_due(jf, kt, work, 0, status)
      cpl%t_put = cpl%t_put + (MPI_Wtime() - t0)
      call log_step(kt, 1, m0, w0)
   end subroutine mlb_put_r4


   subroutine mlb_get_r8(name, kt, array, status, halo)
      !!------------------------------------------------------------------
      !! Receive field name at step kt into the interior of array (the halo
      !! is not touched; levels beyond the field's nlev are set to zero). On a due step this waits for the servers' outputs:
      !! those of step kt (lag 0) or of the previous exchange (lag 1). Between
      !! exchanges it gives the last outputs again; before the first outputs
      !! arrive, and for a field no exchange produces, zeros.
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real64), intent(inout) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h, nl
      real(real64) :: t0, m0, w0

      t0 = MPI_Wtime(); m0 = mono_s(); w0 = cpl%t_wait
      call begin_get(name, kt, shape(array), real64, halo, jf, h, status)
      if (status /= MLB_OK) return
      call unpack_outputs(cpl, jf, array, h)
      nl = cpl%fields(jf)%nlev
      if (size(array, 3) > nl) array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, nl + 1:) = 0._real64
      cpl%t_get = cpl%t_get + (MPI_Wtime() - t0)
      if (logged_get(jf, kt)) call log_step(kt, 2, m0, w0)
   end subroutine mlb_get_r8


   subroutine mlb_get_r4(name, kt, array, status, halo)
      !! As mlb_get_r8 for real32 arrays: received as real64, rounded.
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real32), intent(inout) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h, nl
      real(real64) :: t0, m0, w0
      real(real64), allocatable :: work(:,:,:)

      t0 = MPI_Wtime(); m0 = mono_s(); w0 = cpl%t_wait
      call begin_get(name, kt, shape(array), real32, halo, jf, h, status)
      if (status /= MLB_OK) return
      nl = cpl%fields(jf)%nlev
      !! from the array itself: points no receive box covers come back unchanged (real32 -> real64 is exact)
      allocate(work(cpl%nx_loc, cpl%ny_loc, nl))
      work(:,:,:) = real(array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, 1:nl), real64)
      call unpack_outputs(cpl, jf, work, 0)
      array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, 1:nl) = real(work, real32)
      if (size(array, 3) > nl) array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, nl + 1:) = 0._real32
      cpl%t_get = cpl%t_get + (MPI_Wtime() - t0)
      if (logged_get(jf, kt)) call log_step(kt, 2, m0, w0)
   end subroutine mlb_get_r4


   subroutine mlb_get_schedule(kt_origin, every, lag, npending, status)
      !!------------------------------------------------------------------
      !! The schedule, for the model's restart writer (after mlb_enddef):
      !! exchanges on the steps where MOD(kt - kt_origin, every) == 0
      !! (kt_origin = -huge(1) until the first mlb_put or mlb_get fixes it in a
      !! run without mlb_def_restart); lag; npending = 1 when the outputs of an
      !! exchange's fields are still to be returned by mlb_get at the next
      !! exchange (lag 1 over MPI, after the first exchange): save them with
      !! MLB_PENDING; else 0.
      !!------------------------------------------------------------------
      integer, intent(out) :: kt_origin, every, lag, npending
      integer, intent(out) :: status

      kt_origin = cpl%kt_origin; every = cpl%every; lag = cpl%lag
      npending = merge(1, 0, cpl%recv_pending .or. cpl%recv_ready)
      if (.not. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_get_schedule: call mlb_enddef first', status); return
      end if
      status = MLB_OK
   end subroutine mlb_get_schedule


   subroutine mlb_save_outputs(name, slot, array, status, halo)
      !!------------------------------------------------------------------
      !! For the model's restart writer, at the end of a step: the outputs of
      !! received field name into the interior of array (real64 whatever the
      !! field's kind: they travel and are kept as real64; the halo is not
      !! touched). slot MLB_HELD: what mlb_get returns until the next exchange
      !! (zeros before the first outputs); MLB_PENDING (lag 1, when
      !! mlb_get_schedule says npending = 1): the outputs of the last
      !! exchange's fields, which mlb_get returns at the next exchange; this
      !! waits for them if they are still on their way. Zeros for a field no
      !! exchange produces.
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: slot
      real(real64), intent(inout) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h

      call begin_restart_io('mlb_save_outputs', name, slot, shape(array), halo, jf, h, status)
      if (status /= MLB_OK) return
      if (slot == MLB_PENDING) then
         if (.not. (cpl%recv_pending .or. cpl%recv_ready)) then
            call set_error(cpl, MLB_ERR_CALL, 'mlb_save_outputs('//trim(name)//', MLB_PENDING): no outputs '// &
               & 'are in flight (lag 0, transport oasis, or no exchange yet: mlb_get_schedule says npending = 0)', &
               & status); return
         end if
         call complete_receives(cpl, status)
         if (status /= MLB_OK) return
      end if
      call unpack_outputs(cpl, jf, array, h, slot)
   end subroutine mlb_save_outputs


   subroutine mlb_load_outputs(name, slot, array, status, halo)
      !!------------------------------------------------------------------
      !! For the model's restart reader: give back the outputs of received field
      !! name that mlb_save_outputs gave when the restart was written (from the
      !! interior of array, real64), on any decomposition of the model and of
      !! the servers. Call it after mlb_def_restart and mlb_enddef, before the
      !! first mlb_put. MLB_HELD: mlb_get returns them until the first exchange;
      !! MLB_PENDING (lag 1): mlb_get returns them at the first exchange. A field
      !! no exchange produces is skipped.
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: slot
      real(real64), intent(in) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h

      call begin_restart_io('mlb_load_outputs', name, slot, shape(array), halo, jf, h, status)
      if (status /= MLB_OK) return
      if (.not. cpl%l_restart .or. cpl%kt0 /= -huge(1)) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_load_outputs('//trim(name)//'): call it after mlb_def_restart '// &
            & 'and mlb_enddef, before the first mlb_put', status); return
      end if
      if (slot == MLB_PENDING .and. (cpl%lag == 0 .or. cpl%l_oasis)) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_load_outputs('//trim(name)//', MLB_PENDING): this run has '// &
            & 'no outputs in flight (lag 0, or transport oasis)', status); return
      end if
      if (.not. cpl%fields(jf)%active .or. cpl%nlev_recv == 0) return
      call load_outputs(cpl, jf, slot, array, h)
   end subroutine mlb_load_outputs


   subroutine mlb_finalize(status)
      !!------------------------------------------------------------------
      !! Wait for the messages in flight (the last outputs with lag 1), send
      !! each server the goodbye message (with this rank's timing), and
      !! finalize MPI if mlb_init initialized it. Collective over the model.
      !!------------------------------------------------------------------
      integer, intent(out) :: status
      integer :: ierr
      logical :: done

      if (.not. cpl%l_init) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_finalize: mlb_init was not called', status); return
      end if
      status = MLB_OK
      if (cpl%l_enddef) then
         call drain_transfers(cpl, status)
         if (status /= MLB_OK) return
         if (cpl%l_oasis) then
            call backend_finish(cpl, status)
            if (status /= MLB_OK) return
         end if
         call say_goodbye(cpl, status)
         if (status /= MLB_OK) return
         call free_buffers(cpl)
      end if
      cpl%l_init = .false.; cpl%l_grid = .false.; cpl%l_enddef = .false.; cpl%l_oasis = .false.
      cpl%l_restart = .false.; cpl%recv_ready = .false.
      cpl%nfields = 0
      if (cpl%l_own_mpi) then
         call MPI_Finalized(done, ierr)
         if (.not. done) call MPI_Finalize(ierr)
      end if
   end subroutine mlb_finalize


   subroutine mlb_error_message(msg)
      !! The text of the last error (empty if none).
      character(len=*), intent(out) :: msg
      msg = cpl%last_error
   end subroutine mlb_error_message


   subroutine mlb_wait_seconds(wait_s, put_s, get_s)
      !! Seconds this rank spent waiting for the servers, in mlb_put and in mlb_get (totals).
      real(real64), intent(out) :: wait_s, put_s, get_s
      wait_s = cpl%t_wait; put_s = cpl%t_put; get_s = cpl%t_get
   end subroutine mlb_wait_seconds

   !!----------------------------------------------------------------------
   !!            private routines: the checks of put and get
   !!----------------------------------------------------------------------

   subroutine check_array(caller, jf, ashape, akind, halo, h, status)
      !! The field exists, has the kind declared, and the array holds its interior.
      character(len=*), intent(in) :: caller
      integer, intent(in) :: jf, ashape(3), akind
      integer, intent(in), optional :: halo
      integer, intent(out) :: h, status
      character(len=512) :: msg

      if (cpl%fields(jf)%kind /= akind) then
         call set_error(cpl, MLB_ERR_ARG, caller//': field '//trim(cpl%fields(jf)%name)// &
            & ' was declared with another real kind than the array given', status); return
      end if
      if (present(halo)) then
         h = halo
      else
         h = (ashape(1) - cpl%nx_loc) / 2
      end if
      if (h < 0 .or. ashape(1) /= cpl%nx_loc + 2 * h .or. ashape(2) /= cpl%ny_loc + 2 * h &
         & .or. ashape(3) < cpl%fields(jf)%nlev) then
         write(msg, '(a,3(i0,a),i0,a,3(i0,a))') caller//': field '//trim(cpl%fields(jf)%name)//': array is ', &
            & ashape(1), ' x ', ashape(2), ' x ', ashape(3), ' with halo ', h, '; expected ', &
            & cpl%nx_loc + 2 * max(h, 0), ' x ', cpl%ny_loc + 2 * max(h, 0), ' x (>= ', cpl%fields(jf)%nlev, ')'
         call set_error(cpl, MLB_ERR_ARG, msg, status); return
      end if
      status = MLB_OK
   end subroutine check_array


   subroutine begin_put(name, kt, ashape, akind, halo, jf, h, skip, status)
      !! Checks, and the start of a new step: the buffers of the previous one must be free.
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt, ashape(3), akind
      integer, intent(in), optional :: halo
      integer, intent(out) :: jf, h, status
      logical, intent(out) :: skip
      character(len=256) :: msg

      skip = .true.; h = 0; jf = 0
      if (.not. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_put('//trim(name)//'): call mlb_enddef first', status); return
      end if
      jf = find_field(cpl, name)
      if (jf == 0) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_put: field '//trim(name)//' was not defined', status); return
      end if
      if (cpl%fields(jf)%direction /= MLB_SEND) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_put: field '//trim(name)//' was defined as received (MLB_RECV)', &
            & status); return
      end if
      call check_array('mlb_put', jf, ashape, akind, halo, h, status)
      if (status /= MLB_OK) return
      call first_step(kt)
      if (.not. cpl%fields(jf)%active .or. .not. is_due(cpl, kt)) return
      if (kt /= cpl%put_kt) then
         if (cpl%nput_done /= 0 .and. cpl%nput_done /= cpl%nput_due) then
            write(msg, '(a,i0,a,i0,a)') 'mlb_put: step ', kt, ' started before every field of step ', &
               & cpl%put_kt, ' was put'
            call set_error(cpl, MLB_ERR_CALL, msg, status); return
         end if
         call wait_requests(cpl, cpl%sreq, 'the servers to take the fields of the previous exchange', status, &
            & cpl%put_kt)
         if (status /= MLB_OK) return
         if (cpl%l_oasis .and. cpl%lag > 0) then
            call backend_take_lagged(cpl, kt, status)
            if (status /= MLB_OK) return
         end if
         cpl%put_kt = kt
         cpl%nput_done = 0
         cpl%fields(1:cpl%nfields)%put_done = .false.
      end if
      if (cpl%fields(jf)%put_done) then
         write(msg, '(a,i0)') 'mlb_put: field '//trim(name)//' put twice at step ', kt
         call set_error(cpl, MLB_ERR_CALL, msg, status); return
      end if
      skip = .false.
   end subroutine begin_put


   subroutine put_due(jf, kt, array, h, status)
      !! The put of field jf at a due step, from a real64 array (interior at offset h): by OASIS,
      !! packed (lag 1), or straight from the array (lag 0); then count it.
      integer, intent(in) :: jf, kt, h
      real(real64), intent(in), target :: array(:,:,:)
      integer, intent(out) :: status
      real(real64), allocatable, target :: work(:,:,:)
      integer :: nl

      nl = cpl%fields(jf)%nlev
      if (cpl%l_oasis) then
         call backend_put(cpl, jf, kt, array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, 1:nl), status)
      else if (cpl%lag > 0) then
         call pack_field(cpl, jf, kt, array, h, status)
      else if (is_contiguous(array)) then
         call send_field(cpl, jf, kt, array, h, status)
      else
         !! a strided section: its interior levels, copied once
         allocate(work(cpl%nx_loc, cpl%ny_loc, nl))
         work(:,:,:) = array(h + 1:h + cpl%nx_loc, h + 1:h + cpl%ny_loc, 1:nl)
         call send_field(cpl, jf, kt, work, 0, status)
      end if
      if (status /= MLB_OK) return
      call complete_put(cpl, jf, kt, status)
   end subroutine put_due


   subroutine begin_get(name, kt, ashape, akind, halo, jf, h, status)
      !! Checks; on the first get of a due step, make the outputs this step
      !! needs current (MPI: complete the receives; OASIS: oasis_get).
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt, ashape(3), akind
      integer, intent(in), optional :: halo
      integer, intent(out) :: jf, h, status
      character(len=256) :: msg

      h = 0; jf = 0
      if (.not. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, 'mlb_get('//trim(name)//'): call mlb_enddef first', status); return
      end if
      jf = find_field(cpl, name)
      if (jf == 0) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_get: field '//trim(name)//' was not defined', status); return
      end if
      if (cpl%fields(jf)%direction /= MLB_RECV) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_get: field '//trim(name)//' was defined as sent (MLB_SEND)', status)
         return
      end if
      call check_array('mlb_get', jf, ashape, akind, halo, h, status)
      if (status /= MLB_OK) return
      if (.not. cpl%fields(jf)%active .or. cpl%nlev_recv == 0) return
      call first_step(kt)
      if (.not. is_due(cpl, kt)) return   ! between exchanges the store holds the last outputs
      if (cpl%lag == 0 .and. cpl%put_kt /= kt) then
         write(msg, '(a,i0,a)') 'mlb_get: field '//trim(name)//' at step ', kt, &
            & ' (lag 0): every sent field of that step must be put first'
         call set_error(cpl, MLB_ERR_CALL, msg, status); return
      end if
      if (cpl%l_oasis) then
         call backend_get(cpl, jf, kt, status)
      else
         call receive_outputs(cpl, kt, status)
      end if
   end subroutine begin_get


   subroutine parse_faces(faces, fi, fj, status)
      !! 'east' | 'nemo' -> east north; 'west' -> west south; or 'east|west north|south'.
      character(len=*), intent(in) :: faces
      character(len=5), intent(out) :: fi, fj
      integer, intent(out) :: status
      character(len=64) :: w1, w2, extra
      integer :: ios

      w1 = ''; w2 = ''; extra = ''
      read(faces, *, iostat=ios) w1, w2, extra
      if (ios /= 0) then
         w1 = ''; w2 = ''
         read(faces, *, iostat=ios) w1, w2
         if (ios /= 0) then
            w2 = ''
            read(faces, *, iostat=ios) w1
         end if
      end if
      fi = ''; fj = ''
      if (len_trim(extra) == 0 .and. len_trim(w2) == 0) then
         select case (trim(w1))
         case ('east', 'nemo', 'EAST', 'NEMO'); fi = 'east'; fj = 'north'
         case ('west', 'WEST'); fi = 'west'; fj = 'south'
         end select
      else if (len_trim(extra) == 0) then
         if (w1 == 'east' .or. w1 == 'west') fi = w1(1:5)
         if (w2 == 'north' .or. w2 == 'south') fj = w2(1:5)
      end if
      if (len_trim(fi) == 0 .or. len_trim(fj) == 0) then
         call set_error(cpl, MLB_ERR_ARG, 'mlb_def_grid: faces "'//trim(faces)//'" is not a face convention '// &
            & '(east, west, nemo, or the i face east|west then the j face north|south)', status); return
      end if
      status = MLB_OK
   end subroutine parse_faces


   subroutine first_step(kt)
      !! The first kt seen: the origin of the schedule unless mlb_def_restart gave one.
      integer, intent(in) :: kt
      if (cpl%kt0 /= -huge(1)) return
      cpl%kt0 = kt
      if (cpl%kt_origin == -huge(1)) cpl%kt_origin = kt
   end subroutine first_step


   subroutine begin_restart_io(caller, name, slot, ashape, halo, jf, h, status)
      !! Checks of mlb_save_outputs / mlb_load_outputs: after mlb_enddef, a received field, a known
      !! slot, an array that holds the field's interior (real64 whatever the field's kind).
      character(len=*), intent(in) :: caller, name
      integer, intent(in) :: slot, ashape(3)
      integer, intent(in), optional :: halo
      integer, intent(out) :: jf, h, status

      h = 0; jf = 0
      if (.not. cpl%l_enddef) then
         call set_error(cpl, MLB_ERR_CALL, caller//'('//trim(name)//'): call mlb_enddef first', status); return
      end if
      jf = find_field(cpl, name)
      if (jf == 0) then
         call set_error(cpl, MLB_ERR_ARG, caller//': field '//trim(name)//' was not defined', status); return
      end if
      if (cpl%fields(jf)%direction /= MLB_RECV) then
         call set_error(cpl, MLB_ERR_ARG, caller//': field '//trim(name)//' is sent (MLB_SEND): '// &
            & 'only received fields have outputs to keep', status); return
      end if
      if (slot /= MLB_HELD .and. slot /= MLB_PENDING) then
         call set_error(cpl, MLB_ERR_ARG, caller//'('//trim(name)//'): slot must be MLB_HELD or MLB_PENDING', &
            & status); return
      end if
      call check_array(caller, jf, ashape, cpl%fields(jf)%kind, halo, h, status)
   end subroutine begin_restart_io


   logical function receiver_pulls()
      !! Whether a message's receiver can take it without the sender calling MPI (lag 1: mlb_put
      !! then returns with the fields in flight). Open MPI's shared-memory single-copy mechanisms
      !! (OMPI_MCA_btl_vader_single_copy_mechanism cma, xpmem, knem) let the receiver copy the
      !! whole message out of the sender's memory; without one (none, the launcher's default) a
      !! large message moves in fragments that its sender pushes from inside MPI calls, so a put
      !! left in flight would only move at the next mlb_get. MLBRIDGE_PUT_AT_ONCE = 1 or 0 decides
      !! instead (another MPI library, or to compare).
      character(len=64) :: env
      integer :: ilen, istat

      call get_environment_variable('MLBRIDGE_PUT_AT_ONCE', env, ilen, istat)
      if (istat == 0 .and. ilen > 0) then
         receiver_pulls = trim(env) == '1'
         return
      end if
      call get_environment_variable('OMPI_MCA_btl_vader_single_copy_mechanism', env, ilen, istat)
      receiver_pulls = istat == 0 .and. (trim(env) == 'cma' .or. trim(env) == 'xpmem' .or. trim(env) == 'knem')
   end function receiver_pulls


   real(real64) function mono_s()
      !! Seconds of the monotonic clock (CLOCK_MONOTONIC: gfortran's int64 system_clock, Python's
      !! time.perf_counter on Linux), so that the model's timeline and the servers' line up.
      integer(int64) :: count, rate
      call system_clock(count, rate)
      mono_s = real(count, real64) / real(rate, real64)
   end function mono_s


   logical function logged_get(jf, kt)
      !! A get that moved outputs of an exchange (due step, active field, MPI): timeline it.
      integer, intent(in) :: jf, kt
      logged_get = .not. cpl%l_oasis .and. cpl%fields(jf)%active .and. cpl%nlev_recv > 0 .and. is_due(cpl, kt)
   end function logged_get


   subroutine log_step(kt, kind, m0, w0)
      !! The timeline column of step kt (a new column at a new step, up to MAX_STEPLOG): a put
      !! (kind 1) or get (kind 2) that began at m0 (mono_s) with t_wait at w0 and ends now. A
      !! step's column spans from its first put (get) to the end of its last.
      integer, intent(in) :: kt, kind
      real(real64), intent(in) :: m0, w0
      integer :: n

      if (cpl%l_oasis) return
      if (.not. allocated(cpl%steplog)) then
         allocate(cpl%steplog(STEPLOG_RECORD, MAX_STEPLOG))
         cpl%nsteplog = 0
      end if
      n = cpl%nsteplog
      if (n == 0) then
         n = -1
      else if (nint(cpl%steplog(1, n)) /= kt) then
         n = -1
      end if
      if (n < 0) then
         if (cpl%nsteplog == MAX_STEPLOG) return
         cpl%nsteplog = cpl%nsteplog + 1
         n = cpl%nsteplog
         cpl%steplog(:, n) = [real(kt, real64), -1._real64, -1._real64, -1._real64, -1._real64, 0._real64]
         cpl%steplog_wait0 = w0
      end if
      if (cpl%steplog(2 * kind, n) < 0._real64) cpl%steplog(2 * kind, n) = m0
      cpl%steplog(2 * kind + 1, n) = mono_s()
      cpl%steplog(STEPLOG_RECORD, n) = cpl%t_wait - cpl%steplog_wait0
   end subroutine log_step

end module mlbridge
