!!======================================================================
!!                  ***  SUBMODULE  mlbridge_transfer  ***
!! mlbridge library : the MPI messages of the step loop (transport "mpi"),
!!                    their buffers, and every wait with its deadline
!!======================================================================
!! Message layouts of docs/coupling.md ("The protocol"), mirrored by
!! bridge/transport/mpi.py: FIELDS [kt, segments of one field] per (server,
!! sent field); OUTPUTS [kt, received fields' segments] per server; DONE
!! [exchanges, wait_s, put_s, get_s]. A segment is a box of one field, all
!! its levels, in Fortran order (i fastest): C order (k, j, i) in Python.
!!
!! Buffers (allocate_buffers, from the route table)
!!   recvbuf, store : OUTPUTS of every route one after another (roff,
!!                    rlen); the receives land in recvbuf, which is swapped
!!                    with store when the step that needs them comes (lag 1:
!!                    recvbuf may hold complete outputs, recv_ready, until
!!                    then: a restart step took them early, or a restarted
!!                    run loaded them). Transport oasis:
!!                    store holds each received field's box, one after the
!!                    other (lev_offset), filled by the backend.
!!   sendbuf        : lag 1, one FIELDS message per (field, route) (soff)
!!   header         : lag 0, the step word of each route's FIELDS message
!!----------------------------------------------------------------------
!!   allocate_buffers, free_buffers : (mlb_enddef, mlb_finalize)
!!   send_field, pack_field         : FIELDS, lag 0 / lag 1     (mlb_put)
!!   complete_put                   : count a put; receives, sends (mlb_put)
!!   receive_outputs                : complete OUTPUTS of a step (mlb_get)
!!   complete_receives              : wait for the OUTPUTS posted (mlb_get, mlb_save_outputs)
!!   unpack_outputs                 : store or recvbuf into an array (mlb_get, mlb_save_outputs)
!!   load_outputs                   : an array into store or recvbuf (mlb_load_outputs)
!!   drain_transfers, say_goodbye   : the end                   (mlb_finalize)
!!   wait_requests, probe_message   : waits with a deadline     (everyone)
!!----------------------------------------------------------------------
submodule (mlbridge) mlbridge_transfer
   use mpi_f08, only: MPI_Datatype, MPI_ADDRESS_KIND, MPI_REQUEST_NULL, MPI_DATATYPE_NULL, MPI_DOUBLE_PRECISION, &
      &               MPI_CHARACTER, MPI_ORDER_FORTRAN, MPI_BOTTOM, MPI_ANY_SOURCE, MPI_STATUS_IGNORE, &
      &               MPI_STATUSES_IGNORE, MPI_Isend, MPI_Irecv, MPI_Recv, MPI_Testall, MPI_Iprobe, &
      &               MPI_Get_count, MPI_Get_address, MPI_Type_create_subarray, MPI_Type_create_struct, &
      &               MPI_Type_commit, MPI_Type_free, MPI_F_sync_reg, MPI_Request_get_status, &
      &               operator(==), operator(/=)
   implicit none

contains

   module subroutine allocate_buffers(cpl)
      !! Offsets of each route's OUTPUTS and of each lag-1 FIELDS message, and the buffers for the whole run.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer :: jf, jr, nr, ns

      nr = 0
      do jr = 1, cpl%nroutes
         associate(r => cpl%routes(jr))
            r%roff = nr
            if (r%nrecv > 0) r%rlen = 1 + cpl%nlev_recv * r%recv_pts
            nr = nr + r%rlen
         end associate
      end do
      allocate(cpl%sreq(cpl%nroutes * max(cpl%nfields, 1)), cpl%rreq(cpl%nroutes))
      cpl%sreq(:) = MPI_REQUEST_NULL
      cpl%rreq(:) = MPI_REQUEST_NULL
      if (cpl%l_oasis) nr = cpl%nx_loc * cpl%ny_loc * cpl%nlev_recv
      !! lag 1: the fields are copied into sendbuf, one region per (field, route), and put returns
      !! at once: the servers take them when their closure of the previous exchange is done
      allocate(cpl%soff(cpl%nfields, cpl%nroutes))
      cpl%soff(:,:) = 0
      ns = 0
      if (cpl%lag > 0) then
         do jr = 1, cpl%nroutes
            if (cpl%routes(jr)%nsend == 0) cycle
            do jf = 1, cpl%nfields
               if (.not. cpl%fields(jf)%active .or. cpl%fields(jf)%direction /= MLB_SEND) cycle
               cpl%soff(jf, jr) = ns
               ns = ns + 1 + cpl%fields(jf)%nlev * cpl%routes(jr)%send_pts
            end do
         end do
      end if
      allocate(cpl%sendbuf(max(ns, 1)), cpl%recvbuf(max(nr, 1)), cpl%store(max(nr, 1)), cpl%header(cpl%nroutes))
      cpl%sendbuf(:) = 0._real64; cpl%recvbuf(:) = 0._real64; cpl%store(:) = 0._real64; cpl%header(:) = 0._real64
      allocate(cpl%put_type(cpl%nfields, cpl%nroutes), cpl%put_addr(cpl%nfields, cpl%nroutes), &
         &     cpl%put_key(4, cpl%nfields, cpl%nroutes))
      cpl%put_type(:,:) = MPI_DATATYPE_NULL
      cpl%put_addr(:,:) = 0
      cpl%put_key(:,:,:) = -1
   end subroutine allocate_buffers


   module subroutine free_buffers(cpl)
      !! The datatypes and buffers of allocate_buffers and send_field, once nothing is in flight.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer :: jf, jr, ierr

      do jr = 1, cpl%nroutes
         do jf = 1, size(cpl%put_type, 1)
            if (cpl%put_type(jf, jr) /= MPI_DATATYPE_NULL) call MPI_Type_free(cpl%put_type(jf, jr), ierr)
         end do
      end do
      deallocate(cpl%routes, cpl%sreq, cpl%rreq, cpl%recvbuf, cpl%store, cpl%sendbuf, cpl%soff, cpl%header, &
         &       cpl%put_type, cpl%put_addr, cpl%put_key)
      if (allocated(cpl%done_buf)) deallocate(cpl%done_buf)
      if (allocated(cpl%steplog)) deallocate(cpl%steplog)
      cpl%nsteplog = 0
   end subroutine free_buffers


   module subroutine send_field(cpl, jf, kt, array, h, status)
      !! One FIELDS message [kt, segments of field jf] per server, straight from array (interior
      !! at offset h, C-contiguous in Fortran order) through a struct datatype; returns once MPI
      !! is done with array (the model may change it as soon as mlb_put returns).
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
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
      do jr = 1, cpl%nroutes
         if (cpl%routes(jr)%nsend == 0) cycle
         if (cpl%put_type(jf, jr) == MPI_DATATYPE_NULL .or. cpl%put_addr(jf, jr) /= addr .or. &
            & any(cpl%put_key(:, jf, jr) /= key)) then
            if (cpl%put_type(jf, jr) /= MPI_DATATYPE_NULL) call MPI_Type_free(cpl%put_type(jf, jr), ierr)
            n = cpl%routes(jr)%nsend
            allocate(displs(n + 1), lens(n + 1), types(n + 1))
            call MPI_Get_address(cpl%header(jr), displs(1), ierr)
            lens(:) = 1
            types(1) = MPI_DOUBLE_PRECISION
            do js = 1, n
               associate(b => cpl%routes(jr)%sbox(:, js))
                  call MPI_Type_create_subarray(3, key(1:3), [b(2) - b(1), b(4) - b(3), cpl%fields(jf)%nlev], &
                     & [b(1) + h, b(3) + h, 0], MPI_ORDER_FORTRAN, MPI_DOUBLE_PRECISION, types(js + 1), ierr)
               end associate
               displs(js + 1) = addr
            end do
            call MPI_Type_create_struct(n + 1, lens, displs, types, cpl%put_type(jf, jr), ierr)
            if (ierr == MPI_SUCCESS) call MPI_Type_commit(cpl%put_type(jf, jr), ierr)
            do js = 2, n + 1
               call MPI_Type_free(types(js), ierr)
            end do
            deallocate(displs, lens, types)
            if (ierr /= MPI_SUCCESS) then
               call set_error(cpl, MLB_ERR_MPI, 'mlb_put: building the datatype of field '// &
                  & trim(cpl%fields(jf)%name)//' failed', status); return
            end if
            cpl%put_addr(jf, jr) = addr
            cpl%put_key(:, jf, jr) = key
         end if
         cpl%header(jr) = real(kt, real64)
         call MPI_Isend(MPI_BOTTOM, 1, cpl%put_type(jf, jr), cpl%routes(jr)%server, TAG_FIELDS, cpl%bcomm, &
            & cpl%sreq(jr), ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(cpl, MLB_ERR_MPI, 'mlb_put: MPI_Isend to a server failed', status); return
         end if
      end do
      msg = 'the servers to take field '//trim(cpl%fields(jf)%name)
      call wait_requests(cpl, cpl%sreq, trim(msg), status, kt)
      if (status /= MLB_OK) return
      !! the datatype holds the array's address: keep MPI's view of it in step with the compiler's
      call MPI_F_sync_reg(array)
   end subroutine send_field


   module subroutine pack_field(cpl, jf, kt, array, h, status)
      !! Lag 1: copy field jf into its regions of sendbuf ([kt, segments]) and start one FIELDS
      !! message per server (complete_put completes them once the step's last field is put).
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kt, h
      real(real64), intent(in) :: array(:,:,:)
      integer, intent(out) :: status
      integer :: jr, js, ji, jj, jk, n, n0, nl, ierr

      status = MLB_OK
      nl = cpl%fields(jf)%nlev
      do jr = 1, cpl%nroutes
         if (cpl%routes(jr)%nsend == 0) cycle
         n0 = cpl%soff(jf, jr) + 1
         cpl%sendbuf(n0) = real(kt, real64)
         n = n0
         do js = 1, cpl%routes(jr)%nsend
            associate(b => cpl%routes(jr)%sbox(:, js))
               do jk = 1, nl
                  do jj = b(3) + 1 + h, b(4) + h
                     do ji = b(1) + 1 + h, b(2) + h
                        n = n + 1
                        cpl%sendbuf(n) = array(ji, jj, jk)
                     end do
                  end do
               end do
            end associate
         end do
         call MPI_Isend(cpl%sendbuf(n0), n - n0 + 1, MPI_DOUBLE_PRECISION, cpl%routes(jr)%server, TAG_FIELDS, &
            & cpl%bcomm, cpl%sreq((jf - 1) * cpl%nroutes + jr), ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(cpl, MLB_ERR_MPI, 'mlb_put: MPI_Isend to a server failed', status); return
         end if
      end do
   end subroutine pack_field


   module subroutine complete_put(cpl, jf, kt, status)
      !! Count the field; when the step is complete post the receives of its outputs.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kt
      integer, intent(out) :: status

      status = MLB_OK
      cpl%fields(jf)%put_done = .true.
      cpl%nput_done = cpl%nput_done + 1
      if (cpl%nput_done < cpl%nput_due) return
      cpl%nexchange = cpl%nexchange + 1
      if (cpl%l_oasis) return  ! every field left in its own oasis_put; outputs come by oasis_get
      !! not into outputs that wait in recvbuf for their step (recv_ready): mlb_get posts then
      if (.not. cpl%recv_pending .and. .not. cpl%recv_ready .and. cpl%nlev_recv > 0) &
         & call post_receives(cpl, kt, status)
      if (status /= MLB_OK) return
      !! Lag 1: complete the sends now, unless the servers can take them by themselves (a
      !! single-copy mechanism, l_put_at_once: docs/performance.md). Without one a large message
      !! moves only while both sides are inside MPI calls; the servers are between two closures
      !! when they wait for these fields, this rank is about to compute its step: left in flight,
      !! the fields would wait for mlb_get and the closure would start late (measured: bimodal,
      !! up to 1.4 x slower steps). Lag 0 sends straight from the arrays and has waited already.
      if (cpl%lag > 0 .and. .not. cpl%l_put_at_once) &
         & call wait_requests(cpl, cpl%sreq, 'the servers to take the fields', status, kt)
   end subroutine complete_put


   module subroutine receive_outputs(cpl, kt, status)
      !! First get of due step kt: complete the receives this step needs (the outputs of kt, or of
      !! kt - every with lag 1), make them current (swap with the store).
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: kt
      integer, intent(out) :: status
      real(real64), allocatable :: swap(:)

      status = MLB_OK
      if (kt == cpl%get_kt) return
      cpl%get_kt = kt
      if (cpl%recv_pending .and. cpl%recv_posted_kt <= kt - cpl%lag * cpl%every) then
         call complete_receives(cpl, status)
         if (status /= MLB_OK) return
      end if
      if (cpl%recv_ready .and. cpl%recv_posted_kt <= kt - cpl%lag * cpl%every) then
         call move_alloc(cpl%store, swap)
         call move_alloc(cpl%recvbuf, cpl%store)
         call move_alloc(swap, cpl%recvbuf)
         cpl%recv_ready = .false.
      end if
      !! lag 1: the outputs of this step are received at the next exchange
      if (.not. cpl%recv_pending .and. .not. cpl%recv_ready .and. cpl%put_kt == kt .and. &
         & cpl%recv_posted_kt < kt) call post_receives(cpl, kt, status)
   end subroutine receive_outputs


   module subroutine complete_receives(cpl, status)
      !! Wait for the posted receives, check the step of every message; recvbuf then holds the
      !! outputs of step recv_posted_kt, ready to become current (nothing to do if none are posted).
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      integer :: jr
      character(len=256) :: msg

      status = MLB_OK
      if (.not. cpl%recv_pending) return
      call wait_requests(cpl, cpl%rreq, 'the outputs of the servers', status, cpl%recv_posted_kt)
      if (status /= MLB_OK) return
      cpl%recv_pending = .false.
      do jr = 1, cpl%nroutes
         if (cpl%routes(jr)%nrecv == 0) cycle
         if (nint(cpl%recvbuf(cpl%routes(jr)%roff + 1)) /= cpl%recv_posted_kt) then
            write(msg, '(a,i0,a,i0)') 'mlb_get: a server returned the outputs of step ', &
               & nint(cpl%recvbuf(cpl%routes(jr)%roff + 1)), ' when those of step ', cpl%recv_posted_kt
            call set_error(cpl, MLB_ERR_REMOTE, msg, status); return
         end if
      end do
      cpl%recv_ready = .true.
   end subroutine complete_receives


   module subroutine unpack_outputs(cpl, jf, array, h, slot)
      !! The current outputs of field jf (slot MLB_PENDING: those waiting in recvbuf) into the
      !! interior of array (zeros for an inactive field).
      type(mlb_coupling_t), intent(in), target, asynchronous :: cpl
      integer, intent(in) :: jf, h
      real(real64), intent(inout) :: array(:,:,:)
      integer, intent(in), optional :: slot
      integer :: jr, js, ji, jj, jk, n, nl, nx, ny
      logical :: pending

      nl = cpl%fields(jf)%nlev
      nx = cpl%nx_loc; ny = cpl%ny_loc
      pending = .false.
      if (present(slot)) pending = slot == MLB_PENDING
      if (.not. cpl%fields(jf)%active .or. cpl%nlev_recv == 0) then
         array(h + 1:h + nx, h + 1:h + ny, 1:nl) = 0._real64
      else if (pending) then
         call scatter_routes(cpl%recvbuf)
      else if (cpl%l_oasis) then
         n = cpl%fields(jf)%lev_offset * nx * ny
         array(h + 1:h + nx, h + 1:h + ny, 1:nl) = reshape(cpl%store(n + 1:n + nx * ny * nl), [nx, ny, nl])
      else
         call scatter_routes(cpl%store)
      end if

   contains

      subroutine scatter_routes(buf)
         !! The segments of field jf in buf (recvbuf or store, laid out by route) into array.
         real(real64), intent(in) :: buf(:)
         do jr = 1, cpl%nroutes
            if (cpl%routes(jr)%nrecv == 0) cycle
            n = cpl%routes(jr)%roff + 1 + cpl%fields(jf)%lev_offset * cpl%routes(jr)%recv_pts
            do js = 1, cpl%routes(jr)%nrecv
               associate(b => cpl%routes(jr)%rbox(:, js))
                  do jk = 1, nl
                     do jj = b(3) + 1 + h, b(4) + h
                        do ji = b(1) + 1 + h, b(2) + h
                           n = n + 1
                           array(ji, jj, jk) = buf(n)
                        end do
                     end do
                  end do
               end associate
            end do
         end do
      end subroutine scatter_routes
   end subroutine unpack_outputs


   module subroutine load_outputs(cpl, jf, slot, array, h)
      !! A restarted run: the interior of array into the store (MLB_HELD) or into recvbuf as
      !! outputs ready for the first exchange (MLB_PENDING, lag 1), along this run's routes.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, slot, h
      real(real64), intent(in) :: array(:,:,:)
      integer :: jr, js, ji, jj, jk, n, nl, nx, ny

      nl = cpl%fields(jf)%nlev
      nx = cpl%nx_loc; ny = cpl%ny_loc
      if (cpl%l_oasis) then   ! (MLB_HELD only: mlb_load_outputs refuses the other)
         n = cpl%fields(jf)%lev_offset * nx * ny
         cpl%store(n + 1:n + nx * ny * nl) = reshape(array(h + 1:h + nx, h + 1:h + ny, 1:nl), [nx * ny * nl])
         return
      end if
      do jr = 1, cpl%nroutes
         if (cpl%routes(jr)%nrecv == 0) cycle
         n = cpl%routes(jr)%roff + 1 + cpl%fields(jf)%lev_offset * cpl%routes(jr)%recv_pts
         do js = 1, cpl%routes(jr)%nrecv
            associate(b => cpl%routes(jr)%rbox(:, js))
               do jk = 1, nl
                  do jj = b(3) + 1 + h, b(4) + h
                     do ji = b(1) + 1 + h, b(2) + h
                        n = n + 1
                        if (slot == MLB_PENDING) then
                           cpl%recvbuf(n) = array(ji, jj, jk)
                        else
                           cpl%store(n) = array(ji, jj, jk)
                        end if
                     end do
                  end do
               end do
            end associate
         end do
      end do
      if (slot == MLB_PENDING) then
         !! outputs of a step before this run: current at its first exchange (receive_outputs)
         cpl%recv_ready = .true.
         cpl%recv_posted_kt = -huge(1)
      end if
   end subroutine load_outputs


   module subroutine drain_transfers(cpl, status)
      !! Wait for the messages in flight: the last fields, and the last outputs with lag 1.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status

      call wait_requests(cpl, cpl%sreq, 'the servers to take the last fields', status)
      if (status /= MLB_OK .or. .not. cpl%recv_pending) return
      call wait_requests(cpl, cpl%rreq, 'the servers to return the last outputs', status)
      if (status /= MLB_OK) return
      cpl%recv_pending = .false.
   end subroutine drain_transfers


   module subroutine say_goodbye(cpl, status)
      !! DONE [exchanges, wait_s, put_s, get_s] to every server this rank sends to; return once taken.
      !! Transport mpi: then [nsteplog, the timeline's columns] (the servers write it to
      !! timing_steps.json).
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      integer :: jr, ierr, n, nlog

      nlog = 0
      if (.not. cpl%l_oasis .and. allocated(cpl%steplog)) nlog = cpl%nsteplog
      n = NDONE
      if (.not. cpl%l_oasis) n = NDONE + 1 + STEPLOG_RECORD * nlog
      allocate(cpl%done_buf(n))
      cpl%done_buf(1:NDONE) = [real(cpl%nexchange, real64), cpl%t_wait, cpl%t_put, cpl%t_get]
      if (.not. cpl%l_oasis) then
         cpl%done_buf(NDONE + 1) = real(nlog, real64)
         if (nlog > 0) cpl%done_buf(NDONE + 2:) = reshape(cpl%steplog(:, 1:nlog), [STEPLOG_RECORD * nlog])
      end if
      do jr = 1, cpl%nroutes
         if (cpl%routes(jr)%nsend > 0) then
            call MPI_Isend(cpl%done_buf, n, MPI_DOUBLE_PRECISION, cpl%routes(jr)%server, TAG_DONE, cpl%bcomm, &
               & cpl%sreq(jr), ierr)
         end if
      end do
      call wait_requests(cpl, cpl%sreq, 'the servers to take the goodbye message', status)
   end subroutine say_goodbye


   module subroutine wait_requests(cpl, reqs, what, status, kt)
      !!------------------------------------------------------------------
      !! Wait for all reqs, at most timeout_s: poll MPI_Testall, spinning (with
      !! sched_yield) for SPIN_S then sleeping (up to MAX_SLEEP_US between polls), and look
      !! for an error message from any server meanwhile. A dead or silent
      !! peer gives MLB_ERR_TIMEOUT with a message, never a hang; the message
      !! names the server ranks that did not answer (silent_servers).
      !!------------------------------------------------------------------
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      type(MPI_Request), intent(inout), asynchronous :: reqs(:)
      character(len=*), intent(in) :: what
      integer, intent(out) :: status
      integer, intent(in), optional :: kt
      logical :: flag
      integer :: ierr, sleep_us, npoll
      integer(c_int) :: irc
      real(real64) :: t0, elapsed
      character(len=512) :: msg
      character(len=256) :: who

      status = MLB_OK
      t0 = MPI_Wtime()
      sleep_us = 5
      npoll = 0
      do
         call MPI_Testall(size(reqs), reqs, flag, MPI_STATUSES_IGNORE, ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(cpl, MLB_ERR_MPI, 'mlbridge: MPI_Testall failed while waiting for '//what, status); exit
         end if
         if (flag) exit
         npoll = npoll + 1
         elapsed = MPI_Wtime() - t0
         if (mod(npoll, 64) == 0 .or. elapsed > SPIN_S) then
            call check_server_error(cpl, status)
            if (status /= MLB_OK) exit
         end if
         if (elapsed > cpl%timeout_s) then
            call silent_servers(cpl, reqs, who)
            if (present(kt)) then
               write(msg, '(a,f0.1,a,i0,a,i0,a)') 'mlbridge: timed out after ', cpl%timeout_s, ' s waiting for '// &
                  & what//' (step ', kt, ', model rank ', cpl%model_rank, '): '//trim(who)
            else
               write(msg, '(a,f0.1,a,i0,a)') 'mlbridge: timed out after ', cpl%timeout_s, ' s waiting for '// &
                  & what//' (model rank ', cpl%model_rank, '): '//trim(who)
            end if
            call set_error(cpl, MLB_ERR_TIMEOUT, msg, status); exit
         end if
         if (elapsed > SPIN_S) then
            irc = c_usleep(int(sleep_us, c_int))
            sleep_us = min(2 * sleep_us, MAX_SLEEP_US)
         else if (elapsed > cpl%tight_s) then
            irc = c_sched_yield()
         end if
      end do
      cpl%t_wait = cpl%t_wait + (MPI_Wtime() - t0)
   end subroutine wait_requests


   module subroutine probe_message(cpl, source, tag, what, st, status)
      !! Wait (with the timeout) until a message (source, tag) can be received.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
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
         call MPI_Iprobe(source, tag, cpl%bcomm, flag, st, ierr)
         if (flag) exit
         call check_server_error(cpl, status)
         if (status /= MLB_OK) return
         if (MPI_Wtime() - t0 > cpl%timeout_s) then
            write(msg, '(a,f0.1,a,i0,a)') 'mlbridge: timed out after ', cpl%timeout_s, ' s waiting for '// &
               & what//' (model rank ', cpl%model_rank, '): did the servers start?'
            call set_error(cpl, MLB_ERR_TIMEOUT, msg, status); return
         end if
         irc = c_usleep(int(sleep_us, c_int))
         sleep_us = min(2 * sleep_us, 10 * MAX_SLEEP_US)
      end do
      cpl%t_wait = cpl%t_wait + (MPI_Wtime() - t0)
   end subroutine probe_message

   !!----------------------------------------------------------------------
   !!                 routines of this submodule only
   !!----------------------------------------------------------------------

   subroutine post_receives(cpl, kt, status)
      !! Post one receive per server for the outputs computed from the fields of step kt.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: kt
      integer, intent(out) :: status
      integer :: jr, ierr

      status = MLB_OK
      do jr = 1, cpl%nroutes
         if (cpl%routes(jr)%nrecv == 0) cycle
         call MPI_Irecv(cpl%recvbuf(cpl%routes(jr)%roff + 1), cpl%routes(jr)%rlen, MPI_DOUBLE_PRECISION, &
            & cpl%routes(jr)%server, TAG_OUTPUTS, cpl%bcomm, cpl%rreq(jr), ierr)
         if (ierr /= MPI_SUCCESS) then
            call set_error(cpl, MLB_ERR_MPI, 'mlb_get: MPI_Irecv from a server failed', status); return
         end if
      end do
      cpl%recv_posted_kt = kt
      cpl%recv_pending = .true.
   end subroutine post_receives


   subroutine silent_servers(cpl, reqs, who)
      !! Who did not answer: the server ranks of the requests still pending, when reqs holds one
      !! request per route (rreq) or per (field, route) (sreq); else a question.
      type(mlb_coupling_t), intent(in), target, asynchronous :: cpl
      type(MPI_Request), intent(in), asynchronous :: reqs(:)
      character(len=*), intent(out) :: who
      logical :: silent(size(cpl%server_ranks)), done
      integer :: jq, jr, js, ierr, nsilent
      character(len=16) :: num

      who = 'is a server rank dead?'
      if (cpl%nroutes == 0 .or. .not. allocated(cpl%routes)) return
      if (mod(size(reqs), cpl%nroutes) /= 0) return
      silent(:) = .false.
      do jq = 1, size(reqs)
         call MPI_Request_get_status(reqs(jq), done, MPI_STATUS_IGNORE, ierr)
         if (done) cycle
         jr = mod(jq - 1, cpl%nroutes) + 1
         js = findloc(cpl%server_ranks, cpl%routes(jr)%server, dim=1)
         if (js > 0) silent(js) = .true.
      end do
      nsilent = count(silent)
      if (nsilent == 0) return
      who = trim(merge('server ranks', 'server rank ', nsilent > 1))
      do js = 1, size(silent)
         if (.not. silent(js)) cycle
         write(num, '(i0)') js - 1
         who = trim(who)//' '//trim(num)
         write(num, '(i0)') cpl%server_ranks(js)
         who = trim(who)//' (world rank '//trim(num)//')'
      end do
      who = trim(who)//' did not answer: stuck (e.g. in a closure) or dead?'
   end subroutine silent_servers


   subroutine check_server_error(cpl, status)
      !! A server that gives up (NaN with on_nan = abort, closure failure)
      !! sends its message with TAG_ERROR: receive it and return it as our error.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      logical :: flag
      type(MPI_Status) :: st
      integer :: ierr, nchar
      character(len=:), allocatable :: text

      status = MLB_OK
      call MPI_Iprobe(MPI_ANY_SOURCE, TAG_ERROR, cpl%bcomm, flag, st, ierr)
      if (.not. flag) return
      call MPI_Get_count(st, MPI_CHARACTER, nchar, ierr)
      allocate(character(len=nchar) :: text)
      call MPI_Recv(text, nchar, MPI_CHARACTER, st%MPI_SOURCE, TAG_ERROR, cpl%bcomm, MPI_STATUS_IGNORE, ierr)
      call set_error(cpl, MLB_ERR_REMOTE, text, status)
   end subroutine check_server_error

end submodule mlbridge_transfer
