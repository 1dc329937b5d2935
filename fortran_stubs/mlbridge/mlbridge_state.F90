!!======================================================================
!!                    ***  MODULE  mlbridge_state  ***
!! mlbridge library : the state of one coupling in one derived type, and
!!                    the codes every public routine returns
!!======================================================================
!! Internal: only module mlbridge and its submodules use it; mlbridge
!! re-exports the public constants. One variable of type mlb_coupling_t
!! (cpl, in mlbridge.F90) is the whole state of the library; every routine
!! that reads or writes it gets it as an argument, so who writes what is
!! visible at each call.
!!
!! Who writes what in mlb_coupling_t
!!   l_*, model_rank, server_ranks, bcomm : mlb_init (join_world)
!!   grid and box, land_mask, face_*      : mlb_def_grid
!!   fields(1:nfields)                    : mlb_def_field; active and
!!                                          lev_offset: mlb_enddef
!!   routes, every, lag, timeout_s, l_oasis : mlb_enddef (decode_reply)
!!   oasis_*, flat                        : the OASIS backend
!!   buffers, requests, datatypes         : mlb_enddef (allocate_buffers),
!!                                          then the transfer routines
!!   t_*, nexchange, steplog*             : mlb_put, mlb_get (log_step), the waits
!!   kt_origin, l_restart                 : mlb_def_restart (else the
!!                                          first kt of mlb_put / mlb_get)
!!   schedule (kt0, put_kt, ...)          : mlb_put, mlb_get
!!   recv_ready, recvbuf, store           : the transfer routines, and
!!                                          mlb_save_outputs / mlb_load_outputs
!!   timings, last_error                  : every routine
!!----------------------------------------------------------------------
!!   set_error       : keep the text of an error, return its code
!!   find_field      : index of a field by name (0: none)
!!   is_due          : is step kt an exchange step
!!   box_points      : horizontal points in a list of boxes
!!   lay_out_levels  : level offsets of the active fields, per direction
!!----------------------------------------------------------------------
module mlbridge_state
   use, intrinsic :: iso_fortran_env, only: real64, int32
   use mpi_f08, only: MPI_Comm, MPI_Datatype, MPI_Request, MPI_ADDRESS_KIND
   implicit none
   private

   public :: mlb_coupling_t   ! the variable cpl of mlbridge.F90
   public :: mlb_field_t      ! an element of mlb_coupling_t%fields
   public :: mlb_route_t      ! an element of mlb_coupling_t%routes
   public :: set_error        ! called by every routine that fails
   public :: find_field       ! called by mlb_def_field, mlb_put, mlb_get
   public :: is_due           ! called by mlb_put, mlb_get, the OASIS backend
   public :: box_points       ! called by decode_reply
   public :: lay_out_levels   ! called by mlb_enddef

   !! directions of mlb_def_field (public through mlbridge)
   integer, parameter, public :: MLB_SEND = 1   ! model -> servers
   integer, parameter, public :: MLB_RECV = 2   ! servers -> model
   !! status codes (public through mlbridge)
   integer, parameter, public :: MLB_OK = 0
   integer, parameter, public :: MLB_ERR_CALL = 1      ! call out of order (e.g. put before enddef)
   integer, parameter, public :: MLB_ERR_ARG = 2       ! bad argument (unknown field, wrong shape)
   integer, parameter, public :: MLB_ERR_MPI = 3       ! an MPI call failed
   integer, parameter, public :: MLB_ERR_TIMEOUT = 4   ! a peer did not answer in time
   integer, parameter, public :: MLB_ERR_REMOTE = 5    ! a server reported an error (message kept)
   integer, parameter, public :: MLB_ERR_OASIS = 6     ! an OASIS call failed (transport = "oasis")
   integer, parameter, public :: MLB_NAME_LEN = 32
   !! the outputs a restart keeps (mlb_save_outputs, mlb_load_outputs; public through mlbridge)
   integer, parameter, public :: MLB_HELD = 1      ! what mlb_get returns until the next exchange
   integer, parameter, public :: MLB_PENDING = 2   ! lag 1: the outputs of the last exchange's fields
   !! limits of the library
   integer, parameter, public :: MAX_FIELDS = 64
   integer, parameter, public :: MSG_LEN = 4096        ! longest error text kept

   type :: mlb_field_t
      character(len=MLB_NAME_LEN) :: name = ''
      integer :: nlev = 0
      integer :: direction = 0
      integer :: every = 1
      integer :: kind = real64
      character(len=1) :: point = ' '  ! C-grid point T, U, V or F (mlb_def_field grid=); ' ': not declared (T)
      logical :: active = .true.       ! set by the handshake: some exchange uses it
      integer :: lev_offset = 0        ! levels of the active fields before it, same direction
      logical :: put_done = .false.
      integer :: got_date = -1         ! transport oasis: date of the outputs in store (-1: none)
   end type mlb_field_t

   type :: mlb_route_t
      integer :: server = -1            ! world rank of the server
      integer :: nsend = 0, nrecv = 0   ! number of send / receive boxes
      integer, allocatable :: sbox(:,:), rbox(:,:)   ! (4, n): i0, i1, j0, j1, local, 0-based, half-open
      integer :: send_pts = 0, recv_pts = 0           ! horizontal points per level
      integer :: roff = 0               ! offset of this route in recvbuf / store
      integer :: rlen = 0               ! length of the OUTPUTS message (header included)
   end type mlb_route_t

   type :: mlb_coupling_t
      !! call order
      logical :: l_init = .false., l_grid = .false., l_enddef = .false.
      logical :: l_own_mpi = .false.          ! mlb_init started MPI, mlb_finalize ends it
      !! the job
      type(MPI_Comm) :: bcomm                 ! duplicate of MPI_COMM_WORLD for the bridge's messages
      integer :: world_rank = -1, model_rank = -1, nmodel = 0
      integer, allocatable :: server_ranks(:)
      !! the grid and this rank's interior box (gi0, gj0: 0-based)
      integer :: nx_glo = 0, ny_glo = 0, gi0 = 0, gj0 = 0, nx_loc = 0, ny_loc = 0
      integer(int32), allocatable :: land_mask(:,:)
      !! face convention (mlb_def_grid faces=): U(i) at i+1/2 ('east', NEMO) or i-1/2 ('west');
      !! V(j) at j+1/2 ('north') or j-1/2 ('south')
      character(len=5) :: face_i = 'east', face_j = 'north'
      !! the fields, in definition order
      type(mlb_field_t) :: fields(MAX_FIELDS)
      integer :: nfields = 0
      !! the servers' answer
      type(mlb_route_t), allocatable :: routes(:)
      integer :: nroutes = 0
      integer :: nlev_send = 0, nlev_recv = 0, nput_due = 0
      integer :: every = 1, lag = 0
      logical :: l_oasis = .false.            ! the fields travel through OASIS (the servers' reply says so)
      !! transport oasis (the OASIS backend only)
      integer :: oasis_comp = -1              ! component id
      integer, allocatable :: oasis_var(:)    ! OASIS field of each mlbridge field (-1: inactive)
      real(real64), allocatable :: flat(:,:)  ! one field's box, flat, as oasis_put/get take it
      real(real64) :: timeout_s = 600._real64
      real(real64) :: tight_s = 2.e-3_real64  ! a wait spins this long before it yields the core (mlb_init)
      !! the schedule: exchanges on the steps kt where MOD(kt - kt_origin, every) == 0
      integer :: kt_origin = -huge(1)         ! mlb_def_restart, else the first kt seen
      logical :: l_restart = .false.          ! mlb_def_restart was called: the run continues another
      integer :: kt0 = -huge(1), put_kt = -huge(1), get_kt = -huge(1)   ! kt0: first kt seen (OASIS dates)
      integer :: recv_posted_kt = -huge(1)    ! step whose outputs the posted (or ready) receives hold
      integer :: nput_done = 0
      logical :: recv_pending = .false.       ! receives posted, not complete
      logical :: recv_ready = .false.         ! recvbuf holds complete outputs, not yet current (lag 1)
      !! buffers (MPI reads or writes them between calls: cpl is TARGET and ASYNCHRONOUS)
      real(real64), allocatable :: recvbuf(:), store(:), sendbuf(:)
      real(real64), allocatable :: header(:)  ! the step of a lag-0 FIELDS message, one per route
      real(real64), allocatable :: done_buf(:)
      integer, allocatable :: soff(:,:)       ! (nfields, nroutes): offset of a FIELDS message in sendbuf (lag 1)
      !! lag 0: a struct datatype per (field, route), kept while the array stays put
      type(MPI_Datatype), allocatable :: put_type(:,:)          ! (nfields, nroutes)
      integer(MPI_ADDRESS_KIND), allocatable :: put_addr(:,:)   ! address the type was built for
      integer, allocatable :: put_key(:,:,:)                   ! (4, nfields, nroutes): shape and halo
      type(MPI_Request), allocatable :: sreq(:), rreq(:)
      character(len=:), allocatable :: report_text
      integer(int32), allocatable :: mask_buf(:)
      integer :: join_mine(2) = 0, join_total(2) = 0   ! the join reduction (may outlive mlb_init on a timeout)
      !! diagnostics
      real(real64) :: t_wait = 0._real64, t_put = 0._real64, t_get = 0._real64
      integer :: nexchange = 0
      logical :: l_put_at_once = .false.     ! lag 1: mlb_put returns with the fields in flight (mlb_init)
      !! per-exchange timeline (transport mpi), sent with the goodbye: one column per exchange,
      !! [kt, put start, put end, get start, get end, wait s], times in seconds of the system's
      !! monotonic clock (the servers' time.perf_counter on Linux); the first MAX_STEPLOG only
      real(real64), allocatable :: steplog(:,:)
      integer :: nsteplog = 0
      real(real64) :: steplog_wait0 = 0._real64   ! t_wait when the current column began
      character(len=MSG_LEN) :: last_error = ''
   end type mlb_coupling_t

contains

   subroutine set_error(cpl, code, msg, status)
      !! Keep msg for mlb_error_message and return code as the status.
      type(mlb_coupling_t), intent(inout) :: cpl
      integer, intent(in) :: code
      character(len=*), intent(in) :: msg
      integer, intent(out) :: status
      cpl%last_error = msg
      status = code
   end subroutine set_error


   integer function find_field(cpl, name)
      type(mlb_coupling_t), intent(in) :: cpl
      character(len=*), intent(in) :: name
      integer :: jf
      find_field = 0
      do jf = 1, cpl%nfields
         if (cpl%fields(jf)%name == name) then
            find_field = jf; return
         end if
      end do
   end function find_field


   logical function is_due(cpl, kt)
      type(mlb_coupling_t), intent(in) :: cpl
      integer, intent(in) :: kt
      is_due = modulo(kt - cpl%kt_origin, cpl%every) == 0
   end function is_due


   pure integer function box_points(boxes)
      integer, intent(in) :: boxes(:,:)
      integer :: js
      box_points = 0
      do js = 1, size(boxes, 2)
         box_points = box_points + (boxes(2, js) - boxes(1, js)) * (boxes(4, js) - boxes(3, js))
      end do
   end function box_points


   subroutine lay_out_levels(cpl)
      !! The active fields of each direction one after another in the messages:
      !! their level offsets, the level totals and the number of puts per exchange.
      type(mlb_coupling_t), intent(inout) :: cpl
      integer :: jf

      cpl%nlev_send = 0; cpl%nlev_recv = 0; cpl%nput_due = 0
      do jf = 1, cpl%nfields
         if (.not. cpl%fields(jf)%active) cycle
         associate(f => cpl%fields(jf))
            if (f%direction == MLB_SEND) then
               f%lev_offset = cpl%nlev_send
               cpl%nlev_send = cpl%nlev_send + f%nlev
               cpl%nput_due = cpl%nput_due + 1
            else
               f%lev_offset = cpl%nlev_recv
               cpl%nlev_recv = cpl%nlev_recv + f%nlev
            end if
         end associate
      end do
   end subroutine lay_out_levels

end module mlbridge_state
