!!======================================================================
!!                 ***  SUBMODULE  mlbridge_handshake  ***
!! mlbridge library : the agreement with the servers before the first
!!                    step: the guarded world split, the report, the reply
!!======================================================================
!! Speaks the handshake of docs/coupling.md ("The protocol"), parsed on
!! the Python side by bridge/handshake.py: a change of a line here is a
!! change of the protocol (PROTOCOL_VERSION in mlbridge.F90).
!!----------------------------------------------------------------------
!!   join_world    : guarded join, split, dup, colours    (mlb_init)
!!   send_report   : encode and send the report and mask  (mlb_enddef)
!!   receive_reply : the reply, or the rejection text     (mlb_enddef)
!!   decode_reply  : route table, schedule, transport     (mlb_enddef)
!!----------------------------------------------------------------------
submodule (mlbridge) mlbridge_handshake
   use mpi_f08, only: MPI_COMM_WORLD, MPI_INTEGER, MPI_CHARACTER, MPI_MAX, MPI_STATUS_IGNORE, &
      &               MPI_Comm_rank, MPI_Comm_size, MPI_Comm_split, MPI_Comm_dup, MPI_Allgather, &
      &               MPI_Iallreduce, MPI_Test, MPI_Isend, MPI_Recv, MPI_Get_count
   use mlbridge_state, only: box_points
   implicit none

contains

   module subroutine join_world(cpl, mcomm, status)
      !!------------------------------------------------------------------
      !! Wait (with the timeout) until every rank of the job has reached its
      !! world split, then split MPI_COMM_WORLD by colour (mcomm: the model's
      !! communicator), duplicate it for the bridge's messages and learn the
      !! servers' world ranks from the all-gathered colours.
      !!------------------------------------------------------------------
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      type(MPI_Comm), intent(out) :: mcomm
      integer, intent(out) :: status
      integer :: ierr, nworld, jr
      integer, allocatable :: colours(:)

      call MPI_Comm_rank(MPI_COMM_WORLD, cpl%world_rank, ierr)
      call MPI_Comm_size(MPI_COMM_WORLD, nworld, ierr)
      !! the split below is collective over the world: a peer that never comes would block it for ever
      call wait_world_joined(cpl, status)
      if (status /= MLB_OK) return
      call MPI_Comm_split(MPI_COMM_WORLD, COLOUR_MODEL, cpl%world_rank, mcomm, ierr)
      if (ierr /= MPI_SUCCESS) then
         call set_error(cpl, MLB_ERR_MPI, 'mlb_init: MPI_Comm_split of MPI_COMM_WORLD failed', status); return
      end if
      call MPI_Comm_dup(MPI_COMM_WORLD, cpl%bcomm, ierr)
      allocate(colours(0:nworld-1))
      call MPI_Allgather(COLOUR_MODEL, 1, MPI_INTEGER, colours, 1, MPI_INTEGER, cpl%bcomm, ierr)
      if (ierr /= MPI_SUCCESS) then
         call set_error(cpl, MLB_ERR_MPI, 'mlb_init: MPI_Allgather of the colours failed', status); return
      end if
      call MPI_Comm_rank(mcomm, cpl%model_rank, ierr)
      call MPI_Comm_size(mcomm, cpl%nmodel, ierr)
      cpl%server_ranks = pack([(jr, jr = 0, nworld - 1)], colours == COLOUR_SERVER)
      status = MLB_OK
   end subroutine join_world


   module subroutine send_report(cpl, status)
      !! Send the report (and the land mask) to server rank 0; return once it holds them.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      type(MPI_Request) :: req(2)
      integer :: ierr, nreq

      cpl%report_text = encode_report(cpl)
      call MPI_Isend(cpl%report_text, len(cpl%report_text), MPI_CHARACTER, cpl%server_ranks(1), TAG_REPORT, &
         & cpl%bcomm, req(1), ierr)
      nreq = 1
      if (allocated(cpl%land_mask)) then
         cpl%mask_buf = reshape(cpl%land_mask, [cpl%nx_loc * cpl%ny_loc])
         call MPI_Isend(cpl%mask_buf, size(cpl%mask_buf), MPI_INTEGER, cpl%server_ranks(1), TAG_MASK, &
            & cpl%bcomm, req(2), ierr)
         nreq = 2
      end if
      call wait_requests(cpl, req(1:nreq), 'server rank 0 to take the handshake report', status)
   end subroutine send_report


   module subroutine receive_reply(cpl, reply, status)
      !! The reply of server rank 0; a rejection (first word not 0) comes with its text.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, allocatable, intent(out) :: reply(:)
      integer, intent(out) :: status
      type(MPI_Status) :: st
      integer :: ierr, nword, nchar
      character(len=:), allocatable :: text

      call probe_message(cpl, cpl%server_ranks(1), TAG_REPLY, 'the handshake reply of server rank 0', st, status)
      if (status /= MLB_OK) return
      call MPI_Get_count(st, MPI_INTEGER, nword, ierr)
      allocate(reply(nword))
      call MPI_Recv(reply, nword, MPI_INTEGER, cpl%server_ranks(1), TAG_REPLY, cpl%bcomm, st, ierr)
      if (reply(1) == 0) return
      call probe_message(cpl, cpl%server_ranks(1), TAG_REPLY_TEXT, 'the handshake error text', st, status)
      if (status /= MLB_OK) return
      call MPI_Get_count(st, MPI_CHARACTER, nchar, ierr)
      allocate(character(len=nchar) :: text)
      call MPI_Recv(text, nchar, MPI_CHARACTER, cpl%server_ranks(1), TAG_REPLY_TEXT, cpl%bcomm, st, ierr)
      call set_error(cpl, MLB_ERR_REMOTE, 'mlbridge handshake rejected: '//text, status)
   end subroutine receive_reply


   module subroutine decode_reply(cpl, reply, status)
      !!------------------------------------------------------------------
      !! The route table: [0, version, timeout_ms, every, lag, nfields,
      !! active(nfields), nroutes, per route: server, nsend, boxes, nrecv,
      !! boxes, then the transport (0 mpi, 1 oasis)].
      !!------------------------------------------------------------------
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: reply(:)
      integer, intent(out) :: status
      integer :: jf, jr, p

      if (reply(2) /= PROTOCOL_VERSION .or. reply(6) /= cpl%nfields) then
         call set_error(cpl, MLB_ERR_REMOTE, 'mlb_enddef: the server speaks another protocol version', status)
         return
      end if
      cpl%timeout_s = real(reply(3), real64) * 1.e-3_real64
      cpl%every = reply(4)
      cpl%lag = reply(5)
      p = 7
      do jf = 1, cpl%nfields
         cpl%fields(jf)%active = reply(p) /= 0
         p = p + 1
      end do
      cpl%nroutes = reply(p); p = p + 1
      allocate(cpl%routes(cpl%nroutes))
      do jr = 1, cpl%nroutes
         associate(r => cpl%routes(jr))
            r%server = reply(p); p = p + 1
            r%nsend = reply(p); p = p + 1
            r%sbox = reshape(reply(p:p + 4 * r%nsend - 1), [4, r%nsend])
            p = p + 4 * r%nsend
            r%nrecv = reply(p); p = p + 1
            r%rbox = reshape(reply(p:p + 4 * r%nrecv - 1), [4, r%nrecv])
            p = p + 4 * r%nrecv
            r%send_pts = box_points(r%sbox)
            r%recv_pts = box_points(r%rbox)
         end associate
      end do
      cpl%l_oasis = .false.
      if (p <= size(reply)) cpl%l_oasis = reply(p) == TRANSPORT_OASIS
      status = MLB_OK
   end subroutine decode_reply

   !!----------------------------------------------------------------------
   !!                 routines of this submodule only
   !!----------------------------------------------------------------------

   function encode_report(cpl) result(text)
      !! The report, one line per item (parsed by bridge/handshake.py).
      type(mlb_coupling_t), intent(in) :: cpl
      character(len=:), allocatable :: text
      character(len=512) :: line
      integer :: jf

      text = ''
      write(line, '(a,i0)') 'mlbridge-report ', PROTOCOL_VERSION
      text = text//trim(line)//new_line('a')
      write(line, '(a,i0)') 'rank ', cpl%model_rank
      text = text//trim(line)//new_line('a')
      write(line, '(a,i0,1x,i0)') 'grid ', cpl%nx_glo, cpl%ny_glo
      text = text//trim(line)//new_line('a')
      write(line, '(a,4(1x,i0))') 'box', cpl%gi0, cpl%gj0, cpl%nx_loc, cpl%ny_loc
      text = text//trim(line)//new_line('a')
      write(line, '(a,i0)') 'mask ', merge(1, 0, allocated(cpl%land_mask))
      text = text//trim(line)//new_line('a')
      text = text//'transports '//backend_transports()//new_line('a')
      !! the face convention (servers that predate it ignore the line: NEMO's east north)
      text = text//'faces '//trim(cpl%face_i)//' '//trim(cpl%face_j)//new_line('a')
      if (cpl%l_restart) then   ! mlb_def_restart: the run continues another (schedule origin)
         write(line, '(a,i0)') 'restart ', cpl%kt_origin
         text = text//trim(line)//new_line('a')
      end if
      do jf = 1, cpl%nfields
         associate(f => cpl%fields(jf))
            !! the point, when declared, is a seventh word: servers that predate it read the first six
            write(line, '(a,1x,a,1x,i0,1x,a,1x,i0,1x,a,1x,a)') 'field', trim(f%name), f%nlev, &
               & trim(merge('send', 'recv', f%direction == MLB_SEND)), f%every, &
               & trim(merge('float64', 'float32', f%kind == real64)), trim(f%point)
         end associate
         text = text//trim(line)//new_line('a')
      end do
   end function encode_report


   subroutine wait_world_joined(cpl, status)
      !!------------------------------------------------------------------
      !! Non-blocking all-reduce (maximum) of [JOIN_MAGIC, -JOIN_MAGIC] over
      !! MPI_COMM_WORLD, polled until every rank (the servers included) has
      !! reached its world split, at most timeout_s. Another result means some
      !! rank is in another collective: an error too.
      !!------------------------------------------------------------------
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      type(MPI_Request) :: req
      logical :: flag
      integer :: ierr, sleep_us
      integer(c_int) :: irc
      real(real64) :: t0
      character(len=512) :: msg

      status = MLB_OK
      cpl%join_mine = [JOIN_MAGIC, -JOIN_MAGIC]
      cpl%join_total = 0
      call MPI_Iallreduce(cpl%join_mine, cpl%join_total, 2, MPI_INTEGER, MPI_MAX, MPI_COMM_WORLD, req, ierr)
      if (ierr /= MPI_SUCCESS) then
         call set_error(cpl, MLB_ERR_MPI, 'mlb_init: MPI_Iallreduce on MPI_COMM_WORLD failed', status); return
      end if
      t0 = MPI_Wtime()
      sleep_us = 5
      do
         call MPI_Test(req, flag, MPI_STATUS_IGNORE, ierr)
         if (ierr /= MPI_SUCCESS .or. (flag .and. any(cpl%join_total /= cpl%join_mine))) then
            call set_error(cpl, MLB_ERR_MPI, 'mlb_init: the other programs of the job entered another collective '// &
               & 'on MPI_COMM_WORLD than the mlbridge servers would: are they `python -m bridge.server`?', status)
            return
         end if
         if (flag) exit
         if (MPI_Wtime() - t0 > cpl%timeout_s) then
            write(msg, '(a,f0.1,a)') 'mlb_init: the mlbridge servers did not reach the world split within ', &
               & cpl%timeout_s, ' s (MLBRIDGE_TIMEOUT_S, default 600): did `python -m bridge.server` start? (see its log)'
            call set_error(cpl, MLB_ERR_TIMEOUT, msg, status); return
         end if
         irc = c_usleep(int(sleep_us, c_int))
         sleep_us = min(2 * sleep_us, 10 * MAX_SLEEP_US)
      end do
   end subroutine wait_world_joined

end submodule mlbridge_handshake
