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
!!     Extra levels beyond nlev are ignored.
!!   - step numbers: the first kt given to mlb_put is the first step kt0;
!!     fields are exchanged on steps where MOD(kt - kt0, every) == 0.
!!   - one coupling per process (module state, as OASIS).
!!   - transport: the handshake always goes over MPI; the fields then move
!!     in MPI messages (transport = "mpi") or, in a library built with
!!     OASIS3-MCT (MLB_WITH_OASIS), through oasis_put / oasis_get when the
!!     servers' reply says transport = "oasis" (module mlbridge_oasis).
!!----------------------------------------------------------------------
!!   mlb_init          : split MPI_COMM_WORLD, return the model communicator
!!   mlb_def_grid      : global grid, this rank's interior box, land mask
!!   mlb_def_field     : declare a field sent to or received from the servers
!!   mlb_enddef        : handshake with the servers, receive the route table
!!   mlb_put           : send a field at step kt (when due)
!!   mlb_get           : receive a field at step kt (the last outputs between exchanges)
!!   mlb_finalize      : flush, say goodbye, finalize MPI if mlb_init started it
!!   mlb_error_message : text of the last error
!!----------------------------------------------------------------------
module mlbridge
   use, intrinsic :: iso_fortran_env, only: real32, real64, int32
   use, intrinsic :: iso_c_binding, only: c_int
   use mpi_f08
#ifdef MLB_WITH_OASIS
   use mlbridge_oasis, only: mlbo_start, mlbo_put, mlbo_get, mlbo_stop, MLBO_OK
#endif
   implicit none
   private

   public :: mlb_init          ! called by the model's coupling init (infmod: inf_init)
   public :: mlb_def_grid      ! called by the model's coupling init
   public :: mlb_def_field     ! called by the model's coupling init
   public :: mlb_enddef        ! called by the model's coupling init
   public :: mlb_put           ! called early in the model step (infmod: inf_put)
   public :: mlb_get           ! called late in the model step (infmod: inf_get)
   public :: mlb_finalize      ! called at the end of the run (infmod: inf_final)
   public :: mlb_error_message ! called by the model after a non-zero status
   public :: mlb_wait_seconds  ! diagnostics: seconds this rank waited for the servers

   !! directions of mlb_def_field
   integer, parameter, public :: MLB_SEND = 1   ! model -> servers
   integer, parameter, public :: MLB_RECV = 2   ! servers -> model
   !! status codes
   integer, parameter, public :: MLB_OK = 0
   integer, parameter, public :: MLB_ERR_CALL = 1      ! call out of order (e.g. put before enddef)
   integer, parameter, public :: MLB_ERR_ARG = 2       ! bad argument (unknown field, wrong shape)
   integer, parameter, public :: MLB_ERR_MPI = 3       ! an MPI call failed
   integer, parameter, public :: MLB_ERR_TIMEOUT = 4   ! a peer did not answer in time
   integer, parameter, public :: MLB_ERR_REMOTE = 5    ! a server reported an error (message kept)
   integer, parameter, public :: MLB_ERR_OASIS = 6     ! an OASIS call failed (transport = "oasis")
   integer, parameter, public :: MLB_NAME_LEN = 32

   !! protocol constants, shared with bridge/transport/mpi.py
   integer, parameter :: COLOUR_MODEL = 1, COLOUR_SERVER = 2
   integer, parameter :: PROTOCOL_VERSION = 2  ! must equal bridge.transport.mpi.PROTOCOL_VERSION
   integer, parameter :: TAG_REPORT = 7101, TAG_MASK = 7102, TAG_REPLY = 7103, TAG_REPLY_TEXT = 7104
   integer, parameter :: TAG_FIELDS = 7201, TAG_DONE = 7202, TAG_OUTPUTS = 7203, TAG_ERROR = 7204
   integer, parameter :: MAX_FIELDS = 64
   integer, parameter :: NDONE = 4            ! reals in the goodbye message
   integer, parameter :: TRANSPORT_OASIS = 1  ! last word of the handshake reply (0: mpi)
   integer, parameter :: JOIN_MAGIC = 7100001 ! both sides all-reduce [JOIN_MAGIC, -JOIN_MAGIC] before the split
   !! waits poll busily (yielding the core) for SPIN_S, then sleep between polls: a large message
   !! moves in fragments that need both sides to poll, so sleeping early would stall transfers
   !! (the first TIGHT_S without even yielding: a yield on a busy node can hand the core away for a
   !! whole time slice, in the middle of a transfer that needs both sides)
   real(real64), parameter :: TIGHT_S = 2.e-3_real64
   real(real64), parameter :: SPIN_S = 0.5_real64
   integer, parameter :: MAX_SLEEP_US = 100

   type :: field_t
      character(len=MLB_NAME_LEN) :: name = ''
      integer :: nlev = 0
      integer :: direction = 0
      integer :: every = 1
      integer :: kind = real64
      logical :: active = .true.       ! set by the handshake: some exchange uses it
      integer :: lev_offset = 0        ! levels of the active fields before it, same direction
      logical :: put_done = .false.
      integer :: got_date = -1         ! transport oasis: date of the outputs in store (-1: none)
   end type field_t

   type :: route_t
      integer :: server = -1            ! world rank of the server
      integer :: nsend = 0, nrecv = 0   ! number of send / receive boxes
      integer, allocatable :: sbox(:,:), rbox(:,:)   ! (4, n): i0, i1, j0, j1, local, 0-based, half-open
      integer :: send_pts = 0, recv_pts = 0           ! horizontal points per level
      integer :: roff = 0               ! offset of this route in recvbuf / store
      integer :: rlen = 0               ! length of the OUTPUTS message (header included)
   end type route_t

   !! state of the coupling (written by the mlb_* routines only)
   logical :: l_init = .false., l_grid = .false., l_enddef = .false., l_own_mpi = .false.
   type(MPI_Comm) :: bcomm                 ! duplicate of MPI_COMM_WORLD for the bridge's messages
   integer :: world_rank = -1, model_rank = -1, nmodel = 0
   integer, allocatable :: server_ranks(:)
   integer :: nx_glo = 0, ny_glo = 0, gi0 = 0, gj0 = 0, nx_loc = 0, ny_loc = 0
   integer(int32), allocatable :: land_mask(:,:)
   type(field_t) :: fields(MAX_FIELDS)
   integer :: nfields = 0
   type(route_t), allocatable :: routes(:)
   integer :: nroutes = 0
   integer :: nlev_send = 0, nlev_recv = 0, nput_due = 0, nput_done = 0
   integer :: every = 1, lag = 0
   integer :: kt0 = -huge(1), put_kt = -huge(1), get_kt = -huge(1)
   integer :: recv_posted_kt = -huge(1)    ! step whose outputs the posted receives wait for
   logical :: recv_pending = .false.
   logical :: l_oasis = .false.            ! the fields travel through OASIS (the servers' reply says so)
#ifdef MLB_WITH_OASIS
   real(real64), allocatable :: flat(:,:)  ! transport oasis: one field's box, flat, as oasis_put/get take it
#endif
   real(real64) :: timeout_s = 600._real64
   real(real64) :: t_wait = 0._real64, t_put = 0._real64, t_get = 0._real64
   integer :: nexchange = 0
   real(real64), allocatable, target, asynchronous :: recvbuf(:), store(:), sendbuf(:)
   integer, allocatable :: soff(:,:)      ! (nfields, nroutes): offset of a FIELDS message in sendbuf (lag 1)
   !! FIELDS messages leave straight from the model's arrays: the step comes from header(route),
   !! the segments through a struct datatype per (field, route), kept while the array stays put
   real(real64), allocatable, target, asynchronous :: header(:)
   type(MPI_Datatype), allocatable :: put_type(:,:)          ! (nfields, nroutes)
   integer(MPI_ADDRESS_KIND), allocatable :: put_addr(:,:)   ! address the type was built for
   integer, allocatable :: put_key(:,:,:)                   ! (4, nfields, nroutes): shape and halo
   type(MPI_Request), allocatable, asynchronous :: sreq(:), rreq(:)
   character(len=:), allocatable, asynchronous :: report_text
   integer(int32), allocatable, asynchronous :: mask_buf(:)
   real(real64), asynchronous :: done_buf(NDONE)
   integer, asynchronous :: join_mine(2), join_total(2)   ! the join reduction (may outlive mlb_init on a timeout)
   character(len=4096) :: last_error = ''

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
      !! job whose servers never start returns MLB_ERR_TIMEOUT, never hangs. model_comm: the model's own communicator (integer
      !! handle, as NEMO's mpi_comm_oce), to be used instead of the world.
      !! The timeout of every wait (default 600 s until the servers tell
      !! theirs) can be set with the environment variable MLBRIDGE_TIMEOUT_S.
      !!------------------------------------------------------------------
      integer, intent(out) :: model_comm
      integer, intent(out) :: status
      logical :: done
      integer :: ierr, nworld, jr, nserv, ilen, istat
      integer, allocatable :: colours(:)
      type(MPI_Comm) :: mcomm
      character(len=64) :: env
      real(real64) :: tval

      model_comm = -1
      if (l_init) then
         call set_error(MLB_ERR_CALL, 'mlb_init: called twice', status); return
      end if
      call MPI_Initialized(done, ierr)
      if (.not. done) then
         call MPI_Init(ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(MLB_ERR_MPI, 'mlb_init: MPI_Init failed', status); return
         end if
         l_own_mpi = .true.
      end if
      call MPI_Comm_rank(MPI_COMM_WORLD, world_rank, ierr)
      call MPI_Comm_size(MPI_COMM_WORLD, nworld, ierr)
      call get_environment_variable('MLBRIDGE_TIMEOUT_S', env, ilen, istat)
      if (istat == 0 .and. ilen > 0) then
         read(env, *, iostat=istat) tval
         if (istat == 0 .and. tval > 0._real64) timeout_s = tval
      end if
      !! the split below is collective over the world: a peer that never comes would block it for ever
      call wait_world_joined(status)
      if (status /= MLB_OK) return
      call MPI_Comm_split(MPI_COMM_WORLD, COLOUR_MODEL, world_rank, mcomm, ierr)
      if (ierr /= MPI_SUCCESS) then
         call set_error(MLB_ERR_MPI, 'mlb_init: MPI_Comm_split of MPI_COMM_WORLD failed', status); return
      end if
      call MPI_Comm_dup(MPI_COMM_WORLD, bcomm, ierr)
      allocate(colours(0:nworld-1))
      call MPI_Allgather(COLOUR_MODEL, 1, MPI_INTEGER, colours, 1, MPI_INTEGER, bcomm, ierr)
      if (ierr /= MPI_SUCCESS) then
         call set_error(MLB_ERR_MPI, 'mlb_init: MPI_Allgather of the colours failed', status); return
      end if
      call MPI_Comm_rank(mcomm, model_rank, ierr)
      call MPI_Comm_size(mcomm, nmodel, ierr)
      nserv = count(colours == COLOUR_SERVER)
      allocate(server_ranks(nserv))
      nserv = 0
      do jr = 0, nworld - 1
         if (colours(jr) == COLOUR_SERVER) then
            nserv = nserv + 1
            server_ranks(nserv) = jr
         end if
      end do
      model_comm = mcomm%MPI_VAL
      l_init = .true.
      if (nserv == 0) then
         call set_error(MLB_ERR_CALL, 'mlb_init: no mlbridge server rank in MPI_COMM_WORLD '// &
            & '(start the job with mlbridge run, or mpirun -np N model : -np M python -m bridge.server)', status)
         return
      end if
      status = MLB_OK
   end subroutine mlb_init


   subroutine mlb_def_grid(nx_glo_in, ny_glo_in, i0, j0, nx_loc_in, ny_loc_in, status, mask)
      !!------------------------------------------------------------------
      !! Global grid nx_glo x ny_glo (T points) and this rank's interior box:
      !! nx_loc x ny_loc points starting at global index (i0, j0), 1-based
      !! (as NEMO's nimpp, njmpp). mask(nx_loc, ny_loc): optional land mask
      !! of the interior box (0 land, else ocean), handed to closures that ask.
      !!------------------------------------------------------------------
      integer, intent(in) :: nx_glo_in, ny_glo_in, i0, j0, nx_loc_in, ny_loc_in
      integer, intent(out) :: status
      integer(int32), intent(in), optional :: mask(:,:)
      character(len=256) :: msg

      if (.not. l_init .or. l_enddef) then
         call set_error(MLB_ERR_CALL, 'mlb_def_grid: call it after mlb_init and before mlb_enddef', status)
         return
      end if
      if (nx_glo_in < 1 .or. ny_glo_in < 1 .or. nx_loc_in < 1 .or. ny_loc_in < 1 .or. i0 < 1 .or. j0 < 1 &
         & .or. i0 + nx_loc_in - 1 > nx_glo_in .or. j0 + ny_loc_in - 1 > ny_glo_in) then
         write(msg, '(a,6(i0,a))') 'mlb_def_grid: box of ', nx_loc_in, ' x ', ny_loc_in, ' points at (', i0, &
            & ', ', j0, ') does not fit in the ', nx_glo_in, ' x ', ny_glo_in, ' grid'
         call set_error(MLB_ERR_ARG, msg, status); return
      end if
      if (present(mask)) then
         if (size(mask, 1) /= nx_loc_in .or. size(mask, 2) /= ny_loc_in) then
            write(msg, '(a,4(i0,a))') 'mlb_def_grid: mask is ', size(mask, 1), ' x ', size(mask, 2), &
               & ', the interior box is ', nx_loc_in, ' x ', ny_loc_in
            call set_error(MLB_ERR_ARG, msg, status); return
         end if
         if (allocated(land_mask)) deallocate(land_mask)
         allocate(land_mask(nx_loc_in, ny_loc_in))
         land_mask(:,:) = merge(1, 0, mask /= 0)
      end if
      nx_glo = nx_glo_in; ny_glo = ny_glo_in
      gi0 = i0 - 1; gj0 = j0 - 1
      nx_loc = nx_loc_in; ny_loc = ny_loc_in
      l_grid = .true.
      status = MLB_OK
   end subroutine mlb_def_grid


   subroutine mlb_def_field(name, nlev, direction, kevery, status, kind)
      !!------------------------------------------------------------------
      !! Declare a 3D field of nlev levels sent (MLB_SEND) or received
      !! (MLB_RECV) every kevery steps. kind: real64 (default) or real32,
      !! the kind of the arrays given to mlb_put / mlb_get. The name is the
      !! one coupling.toml uses.
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: nlev, direction, kevery
      integer, intent(out) :: status
      integer, intent(in), optional :: kind
      integer :: jf, ikind

      if (.not. l_init .or. l_enddef) then
         call set_error(MLB_ERR_CALL, 'mlb_def_field: call it after mlb_init and before mlb_enddef', status)
         return
      end if
      ikind = real64
      if (present(kind)) ikind = kind
      if (len_trim(name) == 0 .or. len_trim(name) > MLB_NAME_LEN .or. index(trim(name), ' ') > 0) then
         call set_error(MLB_ERR_ARG, 'mlb_def_field: bad field name "'//trim(name)// &
            & '" (1 to 32 characters, no blanks)', status); return
      end if
      if (nlev < 1 .or. kevery < 1) then
         call set_error(MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//' needs nlev >= 1 and every >= 1', status)
         return
      end if
      if (direction /= MLB_SEND .and. direction /= MLB_RECV) then
         call set_error(MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)// &
            & ': direction must be MLB_SEND or MLB_RECV', status); return
      end if
      if (ikind /= real64 .and. ikind /= real32) then
         call set_error(MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//': kind must be real64 or real32', status)
         return
      end if
      do jf = 1, nfields
         if (fields(jf)%name == name) then
            call set_error(MLB_ERR_ARG, 'mlb_def_field: field '//trim(name)//' defined twice', status); return
         end if
      end do
      if (nfields == MAX_FIELDS) then
         call set_error(MLB_ERR_ARG, 'mlb_def_field: too many fields', status); return
      end if
      nfields = nfields + 1
      fields(nfields) = field_t(name=name, nlev=nlev, direction=direction, every=kevery, kind=ikind)
      status = MLB_OK
   end subroutine mlb_def_field


   subroutine mlb_enddef(status)
      !!------------------------------------------------------------------
      !! The handshake: report grid, box and fields to server rank 0 and wait
      !! for its answer: the route table, or an error naming the field and both
      !! values (then status = MLB_ERR_REMOTE and the text is kept).
      !! Buffers for the whole run are allocated here.
      !!------------------------------------------------------------------
      integer, intent(out) :: status
      type(MPI_Request) :: req(2)
      type(MPI_Status) :: st
      integer :: ierr, nint, jf, jr, nr, ns, p, nreq
      integer, allocatable :: reply(:)
      character(len=512) :: line
      character(len=:), allocatable :: text

      if (.not. l_init .or. .not. l_grid .or. l_enddef) then
         call set_error(MLB_ERR_CALL, 'mlb_enddef: call it once, after mlb_init and mlb_def_grid', status)
         return
      end if
      !! 1. the report, one line per item (parsed by bridge/handshake.py)
      report_text = ''
      write(line, '(a,i0)') 'mlbridge-report ', PROTOCOL_VERSION
      report_text = report_text//trim(line)//new_line('a')
      write(line, '(a,i0)') 'rank ', model_rank
      report_text = report_text//trim(line)//new_line('a')
      write(line, '(a,i0,1x,i0)') 'grid ', nx_glo, ny_glo
      report_text = report_text//trim(line)//new_line('a')
      write(line, '(a,4(1x,i0))') 'box', gi0, gj0, nx_loc, ny_loc
      report_text = report_text//trim(line)//new_line('a')
      write(line, '(a,i0)') 'mask ', merge(1, 0, allocated(land_mask))
      report_text = report_text//trim(line)//new_line('a')
#ifdef MLB_WITH_OASIS
      report_text = report_text//'transports mpi oasis'//new_line('a')
#else
      report_text = report_text//'transports mpi'//new_line('a')
#endif
      do jf = 1, nfields
         write(line, '(a,1x,a,1x,i0,1x,a,1x,i0,1x,a)') 'field', trim(fields(jf)%name), fields(jf)%nlev, &
            & trim(merge('send', 'recv', fields(jf)%direction == MLB_SEND)), fields(jf)%every, &
            & trim(merge('float64', 'float32', fields(jf)%kind == real64))
         report_text = report_text//trim(line)//new_line('a')
      end do
      call MPI_Isend(report_text, len(report_text), MPI_CHARACTER, server_ranks(1), TAG_REPORT, bcomm, req(1), ierr)
      nreq = 1
      if (allocated(land_mask)) then
         mask_buf = reshape(land_mask, [nx_loc * ny_loc])
         call MPI_Isend(mask_buf, size(mask_buf), MPI_INTEGER, server_ranks(1), TAG_MASK, bcomm, req(2), ierr)
         nreq = 2
      end if
      call wait_requests(req(1:nreq), 'server rank 0 to take the handshake report', status)
      if (status /= MLB_OK) return
      !! 2. the reply
      call probe_message(server_ranks(1), TAG_REPLY, 'the handshake reply of server rank 0', st, status)
      if (status /= MLB_OK) return
      call MPI_Get_count(st, MPI_INTEGER, nint, ierr)
      allocate(reply(nint))
      call MPI_Recv(reply, nint, MPI_INTEGER, server_ranks(1), TAG_REPLY, bcomm, st, ierr)
      if (reply(1) /= 0) then
         call probe_message(server_ranks(1), TAG_REPLY_TEXT, 'the handshake error text', st, status)
         if (status /= MLB_OK) return
         call MPI_Get_count(st, MPI_CHARACTER, nint, ierr)
         allocate(character(len=nint) :: text)
         call MPI_Recv(text, nint, MPI_CHARACTER, server_ranks(1), TAG_REPLY_TEXT, bcomm, st, ierr)
         call set_error(MLB_ERR_REMOTE, 'mlbridge handshake rejected: '//text, status)
         return
      end if
      !! 3. the route table: version, timeout_ms, every, lag, nfields, active(nfields), nroutes, routes,
      !!    then the transport (0 mpi, 1 oasis)
      if (reply(2) /= PROTOCOL_VERSION .or. reply(6) /= nfields) then
         call set_error(MLB_ERR_REMOTE, 'mlb_enddef: the server speaks another protocol version', status)
         return
      end if
      timeout_s = real(reply(3), real64) * 1.e-3_real64
      every = reply(4)
      lag = reply(5)
      p = 7
      do jf = 1, nfields
         fields(jf)%active = reply(p) /= 0
         p = p + 1
      end do
      nlev_send = 0; nlev_recv = 0; nput_due = 0
      do jf = 1, nfields
         if (.not. fields(jf)%active) cycle
         if (fields(jf)%direction == MLB_SEND) then
            fields(jf)%lev_offset = nlev_send
            nlev_send = nlev_send + fields(jf)%nlev
            nput_due = nput_due + 1
         else
            fields(jf)%lev_offset = nlev_recv
            nlev_recv = nlev_recv + fields(jf)%nlev
         end if
      end do
      nroutes = reply(p); p = p + 1
      allocate(routes(nroutes), sreq(nroutes * max(nfields, 1)), rreq(nroutes))
      nr = 0
      do jr = 1, nroutes
         routes(jr)%server = reply(p); p = p + 1
         routes(jr)%nsend = reply(p); p = p + 1
         allocate(routes(jr)%sbox(4, routes(jr)%nsend))
         routes(jr)%sbox = reshape(reply(p:p + 4 * routes(jr)%nsend - 1), [4, routes(jr)%nsend])
         p = p + 4 * routes(jr)%nsend
         routes(jr)%nrecv = reply(p); p = p + 1
         allocate(routes(jr)%rbox(4, routes(jr)%nrecv))
         routes(jr)%rbox = reshape(reply(p:p + 4 * routes(jr)%nrecv - 1), [4, routes(jr)%nrecv])
         p = p + 4 * routes(jr)%nrecv
         routes(jr)%send_pts = box_points(routes(jr)%sbox)
         routes(jr)%recv_pts = box_points(routes(jr)%rbox)
         routes(jr)%roff = nr
         if (routes(jr)%nrecv > 0) routes(jr)%rlen = 1 + nlev_recv * routes(jr)%recv_pts
         nr = nr + routes(jr)%rlen
         rreq(jr) = MPI_REQUEST_NULL
      end do
      sreq(:) = MPI_REQUEST_NULL
      l_oasis = .false.
      if (p <= nint) l_oasis = reply(p) == TRANSPORT_OASIS
#ifndef MLB_WITH_OASIS
      if (l_oasis) then
         l_oasis = .false.
         call set_error(MLB_ERR_CALL, 'mlb_enddef: the servers chose transport = "oasis", but this mlbridge '// &
            & 'library was built without OASIS3-MCT (MLB_WITH_OASIS)', status)
         return
      end if
#endif
      !! transport oasis: the store holds the received fields one after another
      if (l_oasis) nr = nx_loc * ny_loc * nlev_recv
      !! lag 1: the fields are copied into sendbuf, one region per (field, route), and put returns
      !! at once: the servers take them when their closure of the previous exchange is done
      allocate(soff(nfields, nroutes))
      soff(:,:) = 0
      ns = 0
      if (lag > 0) then
         do jr = 1, nroutes
            if (routes(jr)%nsend == 0) cycle
            do jf = 1, nfields
               if (.not. fields(jf)%active .or. fields(jf)%direction /= MLB_SEND) cycle
               soff(jf, jr) = ns
               ns = ns + 1 + fields(jf)%nlev * routes(jr)%send_pts
            end do
         end do
      end if
      allocate(sendbuf(max(ns, 1)))
      sendbuf(:) = 0._real64
      allocate(recvbuf(max(nr, 1)), store(max(nr, 1)), header(nroutes))
      recvbuf(:) = 0._real64; store(:) = 0._real64; header(:) = 0._real64
      allocate(put_type(nfields, nroutes), put_addr(nfields, nroutes), put_key(4, nfields, nroutes))
      put_type(:,:) = MPI_DATATYPE_NULL
      put_addr(:,:) = 0
      put_key(:,:,:) = -1
#ifdef MLB_WITH_OASIS
      if (l_oasis) then
         call oasis_start(status)
         if (status /= MLB_OK) return
      end if
#endif
      l_enddef = .true.
      status = MLB_OK
   end subroutine mlb_enddef


   subroutine mlb_put_r8(name, kt, array, status, halo)
      !!------------------------------------------------------------------
      !! Send field name at step kt. A no-op on steps where it is not due, or
      !! when no exchange uses it. Lag 0: one message per server straight from
      !! array (MPI datatype, no copy), and this call returns once the servers
      !! hold it. Lag 1: the field is copied into a send buffer; the put of the
      !! step's last field returns once the servers hold all of them (so that
      !! their work overlaps the rest of the model's step).
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real64), intent(in), target :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h
      logical :: skip
      real(real64) :: t0
      real(real64), allocatable, target :: tmp(:,:,:)

      t0 = MPI_Wtime()
      call begin_put(name, kt, shape(array), real64, halo, jf, h, skip, status)
      if (status /= MLB_OK .or. skip) return
#ifdef MLB_WITH_OASIS
      if (l_oasis) then
         call oasis_put_field(jf, kt, array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:fields(jf)%nlev), status)
         if (status == MLB_OK) call end_put(jf, kt, status)
         t_put = t_put + (MPI_Wtime() - t0)
         return
      end if
#endif
      if (lag > 0) then
         call pack_field(jf, kt, array, h, status)
      else if (is_contiguous(array)) then
         call send_field(jf, kt, array, h, status)
      else
         !! a strided section: its interior levels, copied once
         allocate(tmp(nx_loc, ny_loc, fields(jf)%nlev))
         tmp(:,:,:) = array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:fields(jf)%nlev)
         call send_field(jf, kt, tmp, 0, status)
      end if
      if (status /= MLB_OK) return
      call end_put(jf, kt, status)
      t_put = t_put + (MPI_Wtime() - t0)
   end subroutine mlb_put_r8


   subroutine mlb_put_r4(name, kt, array, status, halo)
      !! As mlb_put_r8 for real32 arrays (sent as real64).
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real32), intent(in) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h
      logical :: skip
      real(real64) :: t0
      real(real64), allocatable, target :: tmp(:,:,:)

      t0 = MPI_Wtime()
      call begin_put(name, kt, shape(array), real32, halo, jf, h, skip, status)
      if (status /= MLB_OK .or. skip) return
      allocate(tmp(nx_loc, ny_loc, fields(jf)%nlev))
      tmp(:,:,:) = real(array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:fields(jf)%nlev), real64)
#ifdef MLB_WITH_OASIS
      if (l_oasis) then
         call oasis_put_field(jf, kt, tmp, status)
         if (status == MLB_OK) call end_put(jf, kt, status)
         t_put = t_put + (MPI_Wtime() - t0)
         return
      end if
#endif
      if (lag > 0) then
         call pack_field(jf, kt, tmp, 0, status)
      else
         call send_field(jf, kt, tmp, 0, status)
      end if
      if (status /= MLB_OK) return
      call end_put(jf, kt, status)
      t_put = t_put + (MPI_Wtime() - t0)
   end subroutine mlb_put_r4


   subroutine mlb_get_r8(name, kt, array, status, halo)
      !!------------------------------------------------------------------
      !! Receive field name at step kt into the interior of array (the halo
      !! is not touched). On a due step this waits for the servers' outputs:
      !! those of step kt (lag 0) or of the previous exchange (lag 1). Between
      !! exchanges it gives the last outputs again; before the first outputs
      !! arrive, and for a field no exchange produces, zeros.
      !!------------------------------------------------------------------
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real64), intent(inout) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h, jr, js, ji, jj, jk, n, nl
      real(real64) :: t0

      t0 = MPI_Wtime()
      call begin_get(name, kt, shape(array), real64, halo, jf, h, status)
      if (status /= MLB_OK) return
      nl = fields(jf)%nlev
      if (.not. fields(jf)%active) then
         array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:nl) = 0._real64
      else if (l_oasis) then
         n = fields(jf)%lev_offset * nx_loc * ny_loc
         array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:nl) = &
            & reshape(store(n + 1:n + nx_loc * ny_loc * nl), [nx_loc, ny_loc, nl])
      else
         do jr = 1, nroutes
            if (routes(jr)%nrecv == 0) cycle
            n = routes(jr)%roff + 1 + fields(jf)%lev_offset * routes(jr)%recv_pts
            do js = 1, routes(jr)%nrecv
               associate(b => routes(jr)%rbox(:, js))
                  do jk = 1, nl
                     do jj = b(3) + 1 + h, b(4) + h
                        do ji = b(1) + 1 + h, b(2) + h
                           n = n + 1
                           array(ji, jj, jk) = store(n)
                        end do
                     end do
                  end do
               end associate
            end do
         end do
      end if
      t_get = t_get + (MPI_Wtime() - t0)
   end subroutine mlb_get_r8


   subroutine mlb_get_r4(name, kt, array, status, halo)
      !! As mlb_get_r8 for real32 arrays (received as real64, rounded).
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt
      real(real32), intent(inout) :: array(:,:,:)
      integer, intent(out) :: status
      integer, intent(in), optional :: halo
      integer :: jf, h, jr, js, ji, jj, jk, n, nl
      real(real64) :: t0

      t0 = MPI_Wtime()
      call begin_get(name, kt, shape(array), real32, halo, jf, h, status)
      if (status /= MLB_OK) return
      nl = fields(jf)%nlev
      if (.not. fields(jf)%active) then
         array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:nl) = 0._real32
      else if (l_oasis) then
         n = fields(jf)%lev_offset * nx_loc * ny_loc
         array(h + 1:h + nx_loc, h + 1:h + ny_loc, 1:nl) = &
            & real(reshape(store(n + 1:n + nx_loc * ny_loc * nl), [nx_loc, ny_loc, nl]), real32)
      else
         do jr = 1, nroutes
            if (routes(jr)%nrecv == 0) cycle
            n = routes(jr)%roff + 1 + fields(jf)%lev_offset * routes(jr)%recv_pts
            do js = 1, routes(jr)%nrecv
               associate(b => routes(jr)%rbox(:, js))
                  do jk = 1, nl
                     do jj = b(3) + 1 + h, b(4) + h
                        do ji = b(1) + 1 + h, b(2) + h
                           n = n + 1
                           array(ji, jj, jk) = real(store(n), real32)
                        end do
                     end do
                  end do
               end associate
            end do
         end do
      end if
      t_get = t_get + (MPI_Wtime() - t0)
   end subroutine mlb_get_r4


   subroutine mlb_finalize(status)
      !!------------------------------------------------------------------
      !! Wait for the messages in flight (the last outputs with lag 1), send
      !! each server the goodbye message (with this rank's timing), and
      !! finalize MPI if mlb_init initialized it. Collective over the model.
      !!------------------------------------------------------------------
      integer, intent(out) :: status
      integer :: jr, jf, ierr
      logical :: done

      if (.not. l_init) then
         call set_error(MLB_ERR_CALL, 'mlb_finalize: mlb_init was not called', status); return
      end if
      status = MLB_OK
      if (l_enddef) then
         call wait_requests(sreq, 'the servers to take the last fields', status)
         if (status /= MLB_OK) return
         if (recv_pending) then
            call wait_requests(rreq, 'the servers to return the last outputs', status)
            if (status /= MLB_OK) return
            recv_pending = .false.
         end if
#ifdef MLB_WITH_OASIS
         if (l_oasis) then
            call oasis_finish(status)
            if (status /= MLB_OK) return
         end if
#endif
         done_buf = [real(nexchange, real64), t_wait, t_put, t_get]
         do jr = 1, nroutes
            if (routes(jr)%nsend > 0) then
               call MPI_Isend(done_buf, NDONE, MPI_DOUBLE_PRECISION, routes(jr)%server, TAG_DONE, bcomm, &
                  & sreq(jr), ierr)
            end if
         end do
         call wait_requests(sreq, 'the servers to take the goodbye message', status)
         if (status /= MLB_OK) return
         do jr = 1, nroutes
            do jf = 1, size(put_type, 1)
               if (put_type(jf, jr) /= MPI_DATATYPE_NULL) call MPI_Type_free(put_type(jf, jr), ierr)
            end do
         end do
         deallocate(routes, sreq, rreq, recvbuf, store, sendbuf, soff, header, put_type, put_addr, put_key)
      end if
      l_init = .false.; l_grid = .false.; l_enddef = .false.; l_oasis = .false.; nfields = 0
      if (l_own_mpi) then
         call MPI_Finalized(done, ierr)
         if (.not. done) call MPI_Finalize(ierr)
      end if
   end subroutine mlb_finalize


   subroutine mlb_error_message(msg)
      !! The text of the last error (empty if none).
      character(len=*), intent(out) :: msg
      msg = last_error
   end subroutine mlb_error_message


   subroutine mlb_wait_seconds(wait_s, put_s, get_s)
      !! Seconds this rank spent waiting for the servers, in mlb_put and in mlb_get (totals).
      real(real64), intent(out) :: wait_s, put_s, get_s
      wait_s = t_wait; put_s = t_put; get_s = t_get
   end subroutine mlb_wait_seconds

   !!----------------------------------------------------------------------
   !!                          private routines
   !!----------------------------------------------------------------------

   subroutine wait_world_joined(status)
      !!------------------------------------------------------------------
      !! Non-blocking all-reduce (maximum) of [JOIN_MAGIC, -JOIN_MAGIC] over
      !! MPI_COMM_WORLD, polled until every rank (the servers included) has
      !! reached its world split, at most timeout_s. Another result means some
      !! rank is in another collective: an error too.
      !!------------------------------------------------------------------
      integer, intent(out) :: status
      type(MPI_Request) :: req
      logical :: flag
      integer :: ierr, sleep_us
      integer(c_int) :: irc
      real(real64) :: t0
      character(len=512) :: msg

      status = MLB_OK
      join_mine = [JOIN_MAGIC, -JOIN_MAGIC]
      join_total = 0
      call MPI_Iallreduce(join_mine, join_total, 2, MPI_INTEGER, MPI_MAX, MPI_COMM_WORLD, req, ierr)
      if (ierr /= MPI_SUCCESS) then
         call set_error(MLB_ERR_MPI, 'mlb_init: MPI_Iallreduce on MPI_COMM_WORLD failed', status); return
      end if
      t0 = MPI_Wtime()
      sleep_us = 5
      do
         call MPI_Test(req, flag, MPI_STATUS_IGNORE, ierr)
         if (ierr /= MPI_SUCCESS .or. (flag .and. any(join_total /= join_mine))) then
            call set_error(MLB_ERR_MPI, 'mlb_init: the other programs of the job entered another collective '// &
               & 'on MPI_COMM_WORLD than the mlbridge servers would: are they `python -m bridge.server`?', status)
            return
         end if
         if (flag) exit
         if (MPI_Wtime() - t0 > timeout_s) then
            write(msg, '(a,f0.1,a)') 'mlb_init: the mlbridge servers did not reach the world split within ', &
               & timeout_s, ' s (MLBRIDGE_TIMEOUT_S, default 600): did `python -m bridge.server` start? (see its log)'
            call set_error(MLB_ERR_TIMEOUT, msg, status); return
         end if
         irc = c_usleep(int(sleep_us, c_int))
         sleep_us = min(2 * sleep_us, 10 * MAX_SLEEP_US)
      end do
   end subroutine wait_world_joined


   subroutine set_error(code, msg, status)
      integer, intent(in) :: code
      character(len=*), intent(in) :: msg
      integer, intent(out) :: status
      last_error = msg
      status = code
   end subroutine set_error


   pure integer function box_points(boxes)
      integer, intent(in) :: boxes(:,:)
      integer :: js
      box_points = 0
      do js = 1, size(boxes, 2)
         box_points = box_points + (boxes(2, js) - boxes(1, js)) * (boxes(4, js) - boxes(3, js))
      end do
   end function box_points


   logical function is_due(kt)
      integer, intent(in) :: kt
      is_due = modulo(kt - kt0, every) == 0
   end function is_due


   integer function find_field(name)
      character(len=*), intent(in) :: name
      integer :: jf
      find_field = 0
      do jf = 1, nfields
         if (fields(jf)%name == name) then
            find_field = jf; return
         end if
      end do
   end function find_field


   subroutine check_array(caller, jf, ashape, akind, halo, h, status)
      !! The field exists, has the kind declared, and the array holds its interior.
      character(len=*), intent(in) :: caller
      integer, intent(in) :: jf, ashape(3), akind
      integer, intent(in), optional :: halo
      integer, intent(out) :: h, status
      character(len=512) :: msg

      if (fields(jf)%kind /= akind) then
         call set_error(MLB_ERR_ARG, caller//': field '//trim(fields(jf)%name)// &
            & ' was declared with another real kind than the array given', status); return
      end if
      if (present(halo)) then
         h = halo
      else
         h = (ashape(1) - nx_loc) / 2
      end if
      if (h < 0 .or. ashape(1) /= nx_loc + 2 * h .or. ashape(2) /= ny_loc + 2 * h .or. ashape(3) < fields(jf)%nlev) then
         write(msg, '(a,3(i0,a),i0,a,3(i0,a))') caller//': field '//trim(fields(jf)%name)//': array is ', &
            & ashape(1), ' x ', ashape(2), ' x ', ashape(3), ' with halo ', h, '; expected ', &
            & nx_loc + 2 * max(h, 0), ' x ', ny_loc + 2 * max(h, 0), ' x (>= ', fields(jf)%nlev, ')'
         call set_error(MLB_ERR_ARG, msg, status); return
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

      skip = .true.; h = 0
      if (.not. l_enddef) then
         call set_error(MLB_ERR_CALL, 'mlb_put('//trim(name)//'): call mlb_enddef first', status); return
      end if
      jf = find_field(name)
      if (jf == 0) then
         call set_error(MLB_ERR_ARG, 'mlb_put: field '//trim(name)//' was not defined', status); return
      end if
      if (fields(jf)%direction /= MLB_SEND) then
         call set_error(MLB_ERR_ARG, 'mlb_put: field '//trim(name)//' was defined as received (MLB_RECV)', status)
         return
      end if
      call check_array('mlb_put', jf, ashape, akind, halo, h, status)
      if (status /= MLB_OK) return
      if (kt0 == -huge(1)) kt0 = kt
      if (.not. fields(jf)%active .or. .not. is_due(kt)) return
      if (kt /= put_kt) then
         if (nput_done /= 0 .and. nput_done /= nput_due) then
            write(msg, '(a,i0,a,i0,a)') 'mlb_put: step ', kt, ' started before every field of step ', put_kt, &
               & ' was put'
            call set_error(MLB_ERR_CALL, msg, status); return
         end if
         call wait_requests(sreq, 'the servers to take the fields of the previous exchange', status, put_kt)
         if (status /= MLB_OK) return
#ifdef MLB_WITH_OASIS
         if (l_oasis .and. lag > 0) then
            call oasis_take_lagged(kt, status)
            if (status /= MLB_OK) return
         end if
#endif
         put_kt = kt
         nput_done = 0
         fields(1:nfields)%put_done = .false.
      end if
      if (fields(jf)%put_done) then
         write(msg, '(a,i0)') 'mlb_put: field '//trim(name)//' put twice at step ', kt
         call set_error(MLB_ERR_CALL, msg, status); return
      end if
      skip = .false.
   end subroutine begin_put


   subroutine send_field(jf, kt, array, h, status)
      !! One FIELDS message [kt, segments of field jf] per server, straight from array (interior
      !! at offset h, C-contiguous in Fortran order) through a struct datatype; returns once MPI
      !! is done with array (the model may change it as soon as mlb_put returns).
      integer, intent(in) :: jf, kt, h
      real(real64), intent(in), target, asynchronous :: array(:,:,:)
      integer, intent(out) :: status
      integer :: jr, js, n, ierr, key(4)
      integer(MPI_ADDRESS_KIND) :: addr
      integer(MPI_ADDRESS_KIND), allocatable :: displs(:)
      integer, allocatable :: lens(:)
      type(MPI_Datatype), allocatable :: types(:)
      character(len=256) :: msg

      status = MLB_OK
      call MPI_Get_address(array, addr, ierr)
      key = [size(array, 1), size(array, 2), size(array, 3), h]
      do jr = 1, nroutes
         if (routes(jr)%nsend == 0) cycle
         if (put_type(jf, jr) == MPI_DATATYPE_NULL .or. put_addr(jf, jr) /= addr .or. &
            & any(put_key(:, jf, jr) /= key)) then
            if (put_type(jf, jr) /= MPI_DATATYPE_NULL) call MPI_Type_free(put_type(jf, jr), ierr)
            n = routes(jr)%nsend
            allocate(displs(n + 1), lens(n + 1), types(n + 1))
            call MPI_Get_address(header(jr), displs(1), ierr)
            lens(:) = 1
            types(1) = MPI_DOUBLE_PRECISION
            do js = 1, n
               associate(b => routes(jr)%sbox(:, js))
                  call MPI_Type_create_subarray(3, key(1:3), [b(2) - b(1), b(4) - b(3), fields(jf)%nlev], &
                     & [b(1) + h, b(3) + h, 0], MPI_ORDER_FORTRAN, MPI_DOUBLE_PRECISION, types(js + 1), ierr)
               end associate
               displs(js + 1) = addr
            end do
            call MPI_Type_create_struct(n + 1, lens, displs, types, put_type(jf, jr), ierr)
            if (ierr == MPI_SUCCESS) call MPI_Type_commit(put_type(jf, jr), ierr)
            do js = 2, n + 1
               call MPI_Type_free(types(js), ierr)
            end do
            deallocate(displs, lens, types)
            if (ierr /= MPI_SUCCESS) then
               call set_error(MLB_ERR_MPI, 'mlb_put: building the datatype of field '//trim(fields(jf)%name)// &
                  & ' failed', status); return
            end if
            put_addr(jf, jr) = addr
            put_key(:, jf, jr) = key
         end if
         header(jr) = real(kt, real64)
         call MPI_Isend(MPI_BOTTOM, 1, put_type(jf, jr), routes(jr)%server, TAG_FIELDS, bcomm, sreq(jr), ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(MLB_ERR_MPI, 'mlb_put: MPI_Isend to a server failed', status); return
         end if
      end do
      msg = 'the servers to take field '//trim(fields(jf)%name)
      call wait_requests(sreq, trim(msg), status, kt)
      if (status /= MLB_OK) return
      !! the datatype holds the array's address: keep MPI's view of it in step with the compiler's
      call MPI_F_sync_reg(array)
   end subroutine send_field


   subroutine pack_field(jf, kt, array, h, status)
      !! Lag 1: copy field jf into its regions of sendbuf ([kt, segments]) and start one FIELDS
      !! message per server (end_put completes them once the step's last field is put).
      integer, intent(in) :: jf, kt, h
      real(real64), intent(in) :: array(:,:,:)
      integer, intent(out) :: status
      integer :: jr, js, ji, jj, jk, n, n0, nl, ierr

      status = MLB_OK
      nl = fields(jf)%nlev
      do jr = 1, nroutes
         if (routes(jr)%nsend == 0) cycle
         n0 = soff(jf, jr) + 1
         sendbuf(n0) = real(kt, real64)
         n = n0
         do js = 1, routes(jr)%nsend
            associate(b => routes(jr)%sbox(:, js))
               do jk = 1, nl
                  do jj = b(3) + 1 + h, b(4) + h
                     do ji = b(1) + 1 + h, b(2) + h
                        n = n + 1
                        sendbuf(n) = array(ji, jj, jk)
                     end do
                  end do
               end do
            end associate
         end do
         call MPI_Isend(sendbuf(n0), n - n0 + 1, MPI_DOUBLE_PRECISION, routes(jr)%server, TAG_FIELDS, bcomm, &
            & sreq((jf - 1) * nroutes + jr), ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(MLB_ERR_MPI, 'mlb_put: MPI_Isend to a server failed', status); return
         end if
      end do
   end subroutine pack_field


   subroutine end_put(jf, kt, status)
      !! Count the field; when the step is complete post the receives of its outputs.
      integer, intent(in) :: jf, kt
      integer, intent(out) :: status

      status = MLB_OK
      fields(jf)%put_done = .true.
      nput_done = nput_done + 1
      if (nput_done < nput_due) return
      nexchange = nexchange + 1
      if (l_oasis) return  ! every field left in its own oasis_put; outputs come by oasis_get
      if (.not. recv_pending .and. nlev_recv > 0) call post_receives(kt, status)
      if (status /= MLB_OK) return
      !! Lag 1: complete the sends now. Without an MPI progress thread a large message moves only
      !! while both sides are inside MPI calls; the servers are between two closures when they
      !! wait for these fields, this rank is about to compute its step: left in flight, the fields
      !! would wait for mlb_get and the closure would start late (measured: bimodal, up to 1.4 x
      !! slower steps). Lag 0 sends straight from the arrays and has waited already.
      if (lag > 0) call wait_requests(sreq, 'the servers to take the fields', status, kt)
   end subroutine end_put


   subroutine post_receives(kt, status)
      !! Post one receive per server for the outputs computed from the fields of step kt.
      integer, intent(in) :: kt
      integer, intent(out) :: status
      integer :: jr, ierr
      status = MLB_OK
      do jr = 1, nroutes
         if (routes(jr)%nrecv == 0) cycle
         call MPI_Irecv(recvbuf(routes(jr)%roff + 1), routes(jr)%rlen, MPI_DOUBLE_PRECISION, routes(jr)%server, &
            & TAG_OUTPUTS, bcomm, rreq(jr), ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(MLB_ERR_MPI, 'mlb_get: MPI_Irecv from a server failed', status); return
         end if
      end do
      recv_posted_kt = kt
      recv_pending = .true.
   end subroutine post_receives


   subroutine begin_get(name, kt, ashape, akind, halo, jf, h, status)
      !! Checks; on the first get of a due step, complete the receives this
      !! step needs and make their outputs current (swap with the store).
      character(len=*), intent(in) :: name
      integer, intent(in) :: kt, ashape(3), akind
      integer, intent(in), optional :: halo
      integer, intent(out) :: jf, h, status
      real(real64), allocatable :: swap(:)
      integer :: jr
      character(len=256) :: msg

      h = 0
      if (.not. l_enddef) then
         call set_error(MLB_ERR_CALL, 'mlb_get('//trim(name)//'): call mlb_enddef first', status); return
      end if
      jf = find_field(name)
      if (jf == 0) then
         call set_error(MLB_ERR_ARG, 'mlb_get: field '//trim(name)//' was not defined', status); return
      end if
      if (fields(jf)%direction /= MLB_RECV) then
         call set_error(MLB_ERR_ARG, 'mlb_get: field '//trim(name)//' was defined as sent (MLB_SEND)', status)
         return
      end if
      call check_array('mlb_get', jf, ashape, akind, halo, h, status)
      if (status /= MLB_OK) return
      if (.not. fields(jf)%active .or. nlev_recv == 0) return
      if (kt0 == -huge(1)) kt0 = kt
#ifdef MLB_WITH_OASIS
      if (l_oasis) then
         call oasis_get_field(jf, kt, status)
         return
      end if
#endif
      if (.not. is_due(kt) .or. kt == get_kt) return
      get_kt = kt
      if (lag == 0 .and. put_kt /= kt) then
         write(msg, '(a,i0,a)') 'mlb_get: field '//trim(name)//' at step ', kt, &
            & ' (lag 0): every sent field of that step must be put first'
         call set_error(MLB_ERR_CALL, msg, status); return
      end if
      if (recv_pending .and. recv_posted_kt <= kt - lag * every) then
         call wait_requests(rreq, 'the outputs of the servers', status, recv_posted_kt)
         if (status /= MLB_OK) return
         recv_pending = .false.
         do jr = 1, nroutes
            if (routes(jr)%nrecv == 0) cycle
            if (nint(recvbuf(routes(jr)%roff + 1)) /= recv_posted_kt) then
               write(msg, '(a,i0,a,i0)') 'mlb_get: a server returned the outputs of step ', &
                  & nint(recvbuf(routes(jr)%roff + 1)), ' when those of step ', recv_posted_kt
               call set_error(MLB_ERR_REMOTE, msg, status); return
            end if
         end do
         call move_alloc(store, swap)
         call move_alloc(recvbuf, store)
         call move_alloc(swap, recvbuf)
      end if
      !! lag 1: the outputs of this step are received at the next exchange
      if (.not. recv_pending .and. put_kt == kt .and. recv_posted_kt < kt) call post_receives(kt, status)
   end subroutine begin_get


#ifdef MLB_WITH_OASIS
   !!----------------------------------------------------------------------
   !!          transport = "oasis" (module mlbridge_oasis underneath)
   !!----------------------------------------------------------------------

   subroutine oasis_start(status)
      !! Join OASIS and define this rank's fields, flat, on its interior box. Collective over the job.
      integer, intent(out) :: status
      integer :: jf, ierr
      character(len=MLB_NAME_LEN) :: names(nfields)
      character(len=512) :: msg

      do jf = 1, nfields
         names(jf) = fields(jf)%name
      end do
      allocate(flat(nx_loc * ny_loc * max(1, maxval(fields(1:nfields)%nlev)), 1))
      flat(:,:) = 0._real64
      call mlbo_start(nx_glo, ny_glo, gi0, gj0, nx_loc, ny_loc, names, fields(1:nfields)%nlev, &
         &            fields(1:nfields)%direction == MLB_SEND, fields(1:nfields)%active, ierr, msg)
      if (ierr /= MLBO_OK) then
         call set_error(MLB_ERR_OASIS, 'mlb_enddef: '//trim(msg), status); return
      end if
      status = MLB_OK
   end subroutine oasis_start


   subroutine oasis_put_field(jf, kt, pfield, status)
      !! oasis_put of field jf (its interior box, all its levels) at step kt: date kt - kt0.
      integer, intent(in) :: jf, kt
      real(real64), intent(in) :: pfield(:,:,:)
      integer, intent(out) :: status
      integer :: n, ierr
      character(len=512) :: msg

      n = size(pfield)
      flat(1:n, 1) = reshape(pfield, [n])
      call mlbo_put(jf, kt - kt0, flat(1:n, :), ierr, msg)
      if (ierr /= MLBO_OK) then
         call set_error(MLB_ERR_OASIS, 'mlb_put('//trim(fields(jf)%name)//'): '//trim(msg), status); return
      end if
      status = MLB_OK
   end subroutine oasis_put_field


   subroutine oasis_get_field(jf, kt, status)
      !! Make the store of received field jf current at step kt: on a due step, the outputs of
      !! kt (lag 0) or of kt - every (lag 1; zeros before the first); between them, unchanged.
      integer, intent(in) :: jf, kt
      integer, intent(out) :: status
      character(len=256) :: msg

      status = MLB_OK
      if (.not. is_due(kt)) return
      if (lag == 0 .and. put_kt /= kt) then
         write(msg, '(a,i0,a)') 'mlb_get: field '//trim(fields(jf)%name)//' at step ', kt, &
            & ' (lag 0): every sent field of that step must be put first'
         call set_error(MLB_ERR_CALL, msg, status); return
      end if
      call oasis_catch_up(jf, kt - kt0 - lag * every, status)
   end subroutine oasis_get_field


   subroutine oasis_take_lagged(kt, status)
      !! Lag 1, before the first put of step kt: take the outputs of kt - every now, since the
      !! dates a component gives OASIS must never go back (a get at kt - every after a put at kt
      !! aborts: "model seems to be running backwards"). mlb_get at kt then returns them.
      integer, intent(in) :: kt
      integer, intent(out) :: status
      integer :: jf

      status = MLB_OK
      do jf = 1, nfields
         if (.not. fields(jf)%active .or. fields(jf)%direction /= MLB_RECV) cycle
         call oasis_catch_up(jf, kt - kt0 - lag * every, status)
         if (status /= MLB_OK) return
      end do
   end subroutine oasis_take_lagged


   subroutine oasis_catch_up(jf, kdate, status)
      !! oasis_get of field jf at every coupling date after the last one got, up to kdate, the
      !! last one kept in the store: OASIS delivers the dates of a field in order only.
      integer, intent(in) :: jf, kdate
      integer, intent(out) :: status
      integer :: n, off, idate, ierr
      real(real64) :: t0
      character(len=512) :: msg

      status = MLB_OK
      if (kdate < 0 .or. kdate <= fields(jf)%got_date) return
      n = nx_loc * ny_loc * fields(jf)%nlev
      off = fields(jf)%lev_offset * nx_loc * ny_loc
      t0 = MPI_Wtime()
      idate = 0
      if (fields(jf)%got_date >= 0) idate = fields(jf)%got_date + every
      do while (idate <= kdate)
         call mlbo_get(jf, idate, flat(1:n, :), ierr, msg)
         if (ierr /= MLBO_OK) then
            call set_error(MLB_ERR_OASIS, 'mlb_get('//trim(fields(jf)%name)//'): '//trim(msg), status); return
         end if
         fields(jf)%got_date = idate
         idate = idate + every
      end do
      store(off + 1:off + n) = flat(1:n, 1)
      t_wait = t_wait + (MPI_Wtime() - t0)
   end subroutine oasis_catch_up


   subroutine oasis_finish(status)
      !! Take the outputs still due (those of the last exchange with lag 1) so that every
      !! oasis_put of the servers is matched, then oasis_terminate. Collective over the job.
      integer, intent(out) :: status
      integer :: jf, ierr
      character(len=512) :: msg

      status = MLB_OK
      if (put_kt /= -huge(1)) then
         do jf = 1, nfields
            if (.not. fields(jf)%active .or. fields(jf)%direction /= MLB_RECV) cycle
            call oasis_catch_up(jf, put_kt - kt0, status)
            if (status /= MLB_OK) return
         end do
      end if
      call mlbo_stop(ierr, msg)
      if (ierr /= MLBO_OK) then
         call set_error(MLB_ERR_OASIS, 'mlb_finalize: '//trim(msg), status); return
      end if
      deallocate(flat)
   end subroutine oasis_finish
#endif


   subroutine wait_requests(reqs, what, status, kt)
      !!------------------------------------------------------------------
      !! Wait for all reqs, at most timeout_s: poll MPI_Testall, spinning (with
      !! sched_yield) for SPIN_S then sleeping (up to MAX_SLEEP_US between polls), and look
      !! for an error message from any server meanwhile. A dead or silent
      !! peer gives MLB_ERR_TIMEOUT with a message, never a hang.
      !!------------------------------------------------------------------
      type(MPI_Request), intent(inout) :: reqs(:)
      character(len=*), intent(in) :: what
      integer, intent(out) :: status
      integer, intent(in), optional :: kt
      logical :: flag
      integer :: ierr, sleep_us, npoll
      integer(c_int) :: irc
      real(real64) :: t0, elapsed
      character(len=512) :: msg

      status = MLB_OK
      t0 = MPI_Wtime()
      sleep_us = 5
      npoll = 0
      do
         call MPI_Testall(size(reqs), reqs, flag, MPI_STATUSES_IGNORE, ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(MLB_ERR_MPI, 'mlbridge: MPI_Testall failed while waiting for '//what, status); exit
         end if
         if (flag) exit
         npoll = npoll + 1
         elapsed = MPI_Wtime() - t0
         if (mod(npoll, 64) == 0 .or. elapsed > SPIN_S) then
            call check_server_error(status)
            if (status /= MLB_OK) exit
         end if
         if (elapsed > timeout_s) then
            if (present(kt)) then
               write(msg, '(a,f0.1,a,i0,a,i0,a)') 'mlbridge: timed out after ', timeout_s, ' s waiting for '// &
                  & what//' (step ', kt, ', model rank ', model_rank, '): is a server rank dead?'
            else
               write(msg, '(a,f0.1,a,i0,a)') 'mlbridge: timed out after ', timeout_s, ' s waiting for '// &
                  & what//' (model rank ', model_rank, '): is a server rank dead?'
            end if
            call set_error(MLB_ERR_TIMEOUT, msg, status); exit
         end if
         if (elapsed > SPIN_S) then
            irc = c_usleep(int(sleep_us, c_int))
            sleep_us = min(2 * sleep_us, MAX_SLEEP_US)
         else if (elapsed > TIGHT_S) then
            irc = c_sched_yield()
         end if
      end do
      t_wait = t_wait + (MPI_Wtime() - t0)
   end subroutine wait_requests


   subroutine probe_message(source, tag, what, st, status)
      !! Wait (with the timeout) until a message (source, tag) can be received.
      integer, intent(in) :: source, tag
      character(len=*), intent(in) :: what
      type(MPI_Status), intent(out) :: st
      integer, intent(out) :: status
      logical :: flag
      integer :: ierr, sleep_us
      integer(c_int) :: irc
      real(real64) :: t0
      character(len=512) :: msg

      status = MLB_OK
      t0 = MPI_Wtime()
      sleep_us = 5
      do
         call MPI_Iprobe(source, tag, bcomm, flag, st, ierr)
         if (flag) exit
         call check_server_error(status)
         if (status /= MLB_OK) return
         if (MPI_Wtime() - t0 > timeout_s) then
            write(msg, '(a,f0.1,a,i0,a)') 'mlbridge: timed out after ', timeout_s, ' s waiting for '// &
               & what//' (model rank ', model_rank, '): did the servers start?'
            call set_error(MLB_ERR_TIMEOUT, msg, status); return
         end if
         irc = c_usleep(int(sleep_us, c_int))
         sleep_us = min(2 * sleep_us, 10 * MAX_SLEEP_US)
      end do
      t_wait = t_wait + (MPI_Wtime() - t0)
   end subroutine probe_message


   subroutine check_server_error(status)
      !! A server that gives up (NaN with on_nan = abort, closure failure)
      !! sends its message with TAG_ERROR: receive it and return it as our error.
      integer, intent(out) :: status
      logical :: flag
      type(MPI_Status) :: st
      integer :: ierr, nchar
      character(len=:), allocatable :: text

      status = MLB_OK
      call MPI_Iprobe(MPI_ANY_SOURCE, TAG_ERROR, bcomm, flag, st, ierr)
      if (.not. flag) return
      call MPI_Get_count(st, MPI_CHARACTER, nchar, ierr)
      allocate(character(len=nchar) :: text)
      call MPI_Recv(text, nchar, MPI_CHARACTER, st%MPI_SOURCE, TAG_ERROR, bcomm, MPI_STATUS_IGNORE, ierr)
      call set_error(MLB_ERR_REMOTE, text, status)
   end subroutine check_server_error

end module mlbridge
