!!======================================================================
!!                     ***  PROGRAM  mlb_driver  ***
!! A synthetic model for the tests and the exchange benchmark of mlbridge
!!======================================================================
!! Reads &driver from the file named on the command line (default
!! driver.nml). Decomposes an nx x ny x nz grid over its ranks, and each
!! step puts fields whose values are exact binary fractions of the global
!! indices and the step (so that the Python side recomputes them bit for
!! bit), then gets the received fields and writes them, rank by rank, to
!! <out_prefix>_r<rank>.bin (stream: for each step, each received field's
!! interior, (i, j, k)) with the box in <out_prefix>_r<rank>.txt.
!! mode = 'bench': one rank, timed raw MPI ping-pong of the bytes of the
!! sent fields with world rank 1, then timed mlb_put/mlb_get round trips;
!! rank 0 prints one line "mlb_driver bench: <json>".
!! mode = 'steps' (coupled) or 'alone' (no mlbridge call at all: the model
!! alone): nitend - nit000 + 1 steps of a calibrated busy loop of busy_ms
!! milliseconds standing in for a model's step, with the puts before it and
!! the gets after it (the overlap a NEMO infmod allows); rank 0 prints
!! "mlb_driver steps: <json>" with the slowest rank's seconds per step after
!! nwarm steps (`mlbridge bench scaling`).
!! Exit status: 0, or 1 with the mlbridge message on stderr (rank that failed).
!!----------------------------------------------------------------------
program mlb_driver
   use, intrinsic :: iso_fortran_env, only: real64, int32, int64, error_unit, output_unit
   use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
   use mpi_f08
   use mlbridge, only: mlb_init, mlb_def_grid, mlb_def_field, mlb_enddef, mlb_put, mlb_get, &
      & mlb_finalize, mlb_error_message, mlb_wait_seconds, MLB_SEND, MLB_RECV, MLB_OK
   implicit none

   integer, parameter :: MAXF = 8
   integer :: nx = 20, ny = 16, nz = 3, jpni = 0, jpnj = 0, nit000 = 1, nitend = 6, every = 1
   integer :: halo = 1, bad_nx_rank = -1, nan_step = -1, nan_i = 1, nan_j = 1, nan_k = 1
   integer :: nrepeat = 20, nwarm = 3
   real(real64) :: busy_ms = 0._real64
   integer :: nlev_send(MAXF) = -1, nlev_recv(MAXF) = -1
   character(len=32) :: send(MAXF) = '', recv(MAXF) = '', nan_field = 'u', mode = 'check'
   character(len=128) :: out_prefix = 'driver'
   logical :: use_mask = .false.
   logical :: alone = .false.
   namelist /driver/ nx, ny, nz, jpni, jpnj, nit000, nitend, every, halo, bad_nx_rank, nan_step, nan_i, &
      & nan_j, nan_k, nan_field, send, recv, nlev_send, nlev_recv, mode, out_prefix, use_mask, nrepeat, nwarm, &
      & busy_ms

   integer :: comm_int, status, ierr, rank, nranks, ios, nsend, nrecv, jf, kt, iu, ji, jj, jk
   integer :: i0, j0, nxl, nyl, pi, pj
   type(MPI_Comm) :: comm
   character(len=256) :: nmlfile
   character(len=1024) :: msg
   real(real64), allocatable :: fld(:,:,:,:), out(:,:,:,:)
   integer(int32), allocatable :: mask(:,:)

   call get_command_argument(1, nmlfile)
   if (len_trim(nmlfile) == 0) nmlfile = 'driver.nml'
   call get_command_argument(2, msg)
   alone = trim(msg) == 'alone'
   if (alone) then   ! the model alone: no mlbridge call at all
      call MPI_Init(ierr)
      comm = MPI_COMM_WORLD
   else
      call mlb_init(comm_int, status)
      call check(status, 'mlb_init')
      comm%MPI_VAL = comm_int
   end if
   call MPI_Comm_rank(comm, rank, ierr)
   call MPI_Comm_size(comm, nranks, ierr)

   open(newunit=iu, file=trim(nmlfile), status='old', action='read', iostat=ios)
   if (ios == 0) read(iu, nml=driver, iostat=ios)
   if (ios /= 0) then
      if (rank == 0) write(error_unit, '(a)') 'mlb_driver: cannot read &driver from '//trim(nmlfile)
      call MPI_Abort(MPI_COMM_WORLD, 1, ierr)
   end if
   close(iu)
   nsend = count(send /= ''); nrecv = count(recv /= '')
   where (nlev_send < 0) nlev_send = nz
   where (nlev_recv < 0) nlev_recv = nz

   !! decomposition: jpni x jpnj, near-square by default; sizes differ by at most one, larger first
   if (jpni * jpnj /= nranks) then
      pj = int(sqrt(real(nranks)))
      do while (mod(nranks, pj) /= 0)
         pj = pj - 1
      end do
      pi = nranks / pj
   else
      pi = jpni; pj = jpnj
   end if
   call split(nx, pi, mod(rank, pi), i0, nxl)
   call split(ny, pj, rank / pi, j0, nyl)
   allocate(mask(nxl, nyl)); mask(:,:) = 1
   if (use_mask) then
      do jj = 1, nyl
         do ji = 1, nxl
            if (mod(i0 + ji + 2 * (j0 + jj), 7) == 0) mask(ji, jj) = 0
         end do
      end do
   end if
   if (alone) then
      continue
   else if (rank == bad_nx_rank) then
      call mlb_def_grid(nx + 1, ny, i0, j0, nxl, nyl, status, mask=mask)
   else if (use_mask) then
      call mlb_def_grid(nx, ny, i0, j0, nxl, nyl, status, mask=mask)
   else
      call mlb_def_grid(nx, ny, i0, j0, nxl, nyl, status)
   end if
   if (.not. alone) call check(status, 'mlb_def_grid')
   do jf = 1, merge(0, nsend, alone)
      call mlb_def_field(trim(send(jf)), nlev_send(jf), MLB_SEND, every, status)
      call check(status, 'mlb_def_field')
   end do
   do jf = 1, merge(0, nrecv, alone)
      call mlb_def_field(trim(recv(jf)), nlev_recv(jf), MLB_RECV, every, status)
      call check(status, 'mlb_def_field')
   end do
   allocate(fld(1 - halo:nxl + halo, 1 - halo:nyl + halo, nz, max(nsend, 1)))
   allocate(out(1 - halo:nxl + halo, 1 - halo:nyl + halo, nz, max(nrecv, 1)))

   if (mode == 'bench') then
      call bench()
   else if (alone) then
      call steps(.false.)
      call MPI_Finalize(ierr)
      stop
   else if (mode == 'steps') then
      call steps(.true.)
   else
      call mlb_enddef(status)
      call check(status, 'mlb_enddef')
      open(newunit=iu, file=trim(out_prefix)//'_r'//itoa(rank)//'.txt', status='replace', action='write')
      write(iu, '(4(i0,1x))') i0 - 1, j0 - 1, nxl, nyl
      close(iu)
      open(newunit=iu, file=trim(out_prefix)//'_r'//itoa(rank)//'.bin', status='replace', access='stream', &
         & form='unformatted', action='write')
      do kt = nit000, nitend
         do jf = 1, nsend
            call fill(jf, kt, fld(:,:,:,jf))
            call mlb_put(trim(send(jf)), kt, fld(:,:,1:nlev_send(jf),jf), status)
            call check(status, 'mlb_put')
         end do
         do jf = 1, nrecv
            out(:,:,:,jf) = -999._real64
            call mlb_get(trim(recv(jf)), kt, out(:,:,1:nlev_recv(jf),jf), status)
            call check(status, 'mlb_get')
            write(iu) out(1:nxl, 1:nyl, 1:nlev_recv(jf), jf)
         end do
      end do
      close(iu)
   end if
   call mlb_finalize(status)
   call check(status, 'mlb_finalize')

contains

   subroutine check(kstatus, what)
      integer, intent(in) :: kstatus
      character(len=*), intent(in) :: what
      if (kstatus == MLB_OK) return
      call mlb_error_message(msg)
      write(error_unit, '(a,i0,a,i0,a)') 'mlb_driver: rank ', rank, ': '//what//' failed (status ', kstatus, '): '// &
         & trim(msg)
      flush(error_unit)
      call MPI_Abort(MPI_COMM_WORLD, 1, ierr)
   end subroutine check

   subroutine split(n, parts, p, start, length)
      !! part p (0-based) of n cells in parts pieces, larger pieces first; start is 1-based
      integer, intent(in) :: n, parts, p
      integer, intent(out) :: start, length
      integer :: base, extra
      base = n / parts; extra = mod(n, parts)
      length = base + merge(1, 0, p < extra)
      start = 1 + p * base + min(p, extra)
   end subroutine split

   function itoa(k) result(s)
      integer, intent(in) :: k
      character(len=:), allocatable :: s
      character(len=16) :: buf
      write(buf, '(i0)') k
      s = trim(buf)
   end function itoa

   subroutine fill(kf, kt, a)
      !! value(i, j, k) = mod(7 i^2 + 13 j + 31 k + 17 kt + 101 f, 1000) / 2 (global 0-based i, j;
      !! k, kt, f 1-based); NaN at (nan_i, nan_j, nan_k) (global 1-based) of nan_field at nan_step
      integer, intent(in) :: kf, kt
      real(real64), intent(out) :: a(1 - halo:, 1 - halo:, :)
      integer :: ig, jg
      a(:,:,:) = 0._real64
      do jk = 1, nz
         do jj = 1, nyl
            do ji = 1, nxl
               ig = i0 + ji - 2; jg = j0 + jj - 2
               a(ji, jj, jk) = 0.5_real64 * real(modulo(7 * ig * ig + 13 * jg + 31 * jk + 17 * kt + 101 * kf, 1000), real64)
            end do
         end do
      end do
      if (kt == nan_step .and. send(kf) == nan_field) then
         ji = nan_i - i0 + 1; jj = nan_j - j0 + 1
         if (ji >= 1 .and. ji <= nxl .and. jj >= 1 .and. jj <= nyl) then
            a(ji, jj, nan_k) = ieee_value(0._real64, ieee_quiet_nan)
         end if
      end if
   end subroutine fill

   subroutine bench()
      !! raw ping-pong with world rank 1, then the same bytes through mlbridge. Raw: the same
      !! direction pattern as the bridge's exchange, one message per field (the interior of each
      !! sent field out, one per received field back), blocking MPI_Send/MPI_Recv of contiguous
      !! buffers reused every trip; the server echoes the buffers it received.
      real(real64), allocatable :: raw_out(:,:), raw_in(:,:), t_raw(:), t_brg(:)
      real(real64) :: t0, wait_s, put_s, get_s
      integer :: it, nbytes_f, jr, wrank
      type(MPI_Status) :: st

      nbytes_f = nxl * nyl * nz
      allocate(raw_out(nbytes_f, nsend), raw_in(nbytes_f, nrecv), t_raw(nrepeat), t_brg(nrepeat))
      raw_out(:,:) = 1._real64
      raw_in(:,:) = 0._real64
      call MPI_Comm_rank(MPI_COMM_WORLD, wrank, ierr)
      do it = 1, nwarm + nrepeat
         t0 = MPI_Wtime()
         do jf = 1, nsend
            call MPI_Send(raw_out(:, jf), nbytes_f, MPI_DOUBLE_PRECISION, 1, 1, MPI_COMM_WORLD, ierr)
         end do
         do jf = 1, nrecv
            call MPI_Recv(raw_in(:, jf), nbytes_f, MPI_DOUBLE_PRECISION, 1, 2, MPI_COMM_WORLD, st, ierr)
         end do
         if (it > nwarm) t_raw(it - nwarm) = MPI_Wtime() - t0
      end do
      call mlb_enddef(status)
      call check(status, 'mlb_enddef')
      do jf = 1, nsend
         call fill(jf, 1, fld(:,:,:,jf))
      end do
      do it = 1, nwarm + nrepeat
         kt = nit000 + it - 1
         t0 = MPI_Wtime()
         do jf = 1, nsend
            call mlb_put(trim(send(jf)), kt, fld(:,:,:,jf), status)
            call check(status, 'mlb_put')
         end do
         do jf = 1, nrecv
            call mlb_get(trim(recv(jf)), kt, out(:,:,:,jf), status)
            call check(status, 'mlb_get')
         end do
         if (it > nwarm) t_brg(it - nwarm) = MPI_Wtime() - t0
      end do
      call mlb_wait_seconds(wait_s, put_s, get_s)
      if (rank == 0) then
         write(output_unit, '(a,i0,a,i0,a,i0,a,i0,a)', advance='no') 'mlb_driver bench: {"nx": ', nxl, &
            & ', "ny": ', nyl, ', "nz": ', nz, ', "repeats": ', nrepeat, ', "raw_s": ['
         do jr = 1, nrepeat
            write(output_unit, '(es12.5,a)', advance='no') t_raw(jr), trim(merge(', ', ' ]', jr < nrepeat))
         end do
         write(output_unit, '(a)', advance='no') ', "bridge_s": ['
         do jr = 1, nrepeat
            write(output_unit, '(es12.5,a)', advance='no') t_brg(jr), trim(merge(', ', ' ]', jr < nrepeat))
         end do
         write(output_unit, '(a,es12.5,a)') ', "wait_s": ', wait_s, '}'
         flush(output_unit)
      end if
   end subroutine bench


   subroutine steps(coupled)
      !! The step loop of a model whose step costs busy_ms of computation: puts, the busy loop,
      !! gets (coupled), or the busy loop alone. Prints the slowest rank's seconds per step.
      logical, intent(in) :: coupled
      real(real64) :: t0, t_loop, t_max, sink
      integer(int64) :: niter
      integer :: nsteps

      niter = calibrate(busy_ms)
      if (coupled) then
         call mlb_enddef(status)
         call check(status, 'mlb_enddef')
      end if
      do jf = 1, nsend
         call fill(jf, 1, fld(:,:,:,jf))
      end do
      nsteps = nitend - nit000 + 1
      sink = 0._real64
      t0 = MPI_Wtime()
      do kt = nit000, nitend
         if (kt == nit000 + nwarm) then
            call MPI_Barrier(comm, ierr)
            t0 = MPI_Wtime()
         end if
         if (coupled) then
            do jf = 1, nsend
               call mlb_put(trim(send(jf)), kt, fld(:,:,:,jf), status)
               call check(status, 'mlb_put')
            end do
         end if
         sink = sink + busy(niter)
         if (coupled) then
            do jf = 1, nrecv
               call mlb_get(trim(recv(jf)), kt, out(:,:,:,jf), status)
               call check(status, 'mlb_get')
            end do
         end if
      end do
      t_loop = MPI_Wtime() - t0
      call MPI_Reduce(t_loop, t_max, 1, MPI_DOUBLE_PRECISION, MPI_MAX, 0, comm, ierr)
      if (rank == 0) then
         write(output_unit, '(a,es12.5,a,i0,a,i0,a,f0.3,a,es10.3,a)') 'mlb_driver steps: {"step_s": ', &
            & t_max / real(max(nsteps - nwarm, 1), real64), ', "steps": ', nsteps - nwarm, ', "ranks": ', nranks, &
            & ', "busy_ms": ', busy_ms, ', "sink": ', sink, '}'
         flush(output_unit)
      end if
   end subroutine steps

   integer(int64) function calibrate(ms)
      !! Iterations of busy() that take ms milliseconds on this core (median of 5 timings).
      real(real64), intent(in) :: ms
      real(real64) :: t(5), t0, sink, per_iter, tmp
      integer :: jt
      integer(int64), parameter :: NCAL = 200000_int64

      calibrate = 0
      if (ms <= 0._real64) return
      sink = 0._real64
      do jt = 1, 5
         t0 = MPI_Wtime()
         sink = sink + busy(NCAL)
         t(jt) = MPI_Wtime() - t0
      end do
      do jt = 2, 5   ! insertion sort, for the median
         tmp = t(jt)
         ji = jt - 1
         do while (ji >= 1)
            if (t(ji) <= tmp) exit
            t(ji + 1) = t(ji)
            ji = ji - 1
         end do
         t(ji + 1) = tmp
      end do
      per_iter = t(3) / real(NCAL, real64)
      !! (sink keeps the calibration loop from being optimised away)
      calibrate = max(1_int64, int(ms * 1.e-3_real64 / per_iter, int64) + merge(1_int64, 0_int64, sink < 0._real64))
   end function calibrate

   real(real64) function busy(niter)
      !! A dependent chain of floating-point work (no memory traffic): niter iterations.
      integer(int64), intent(in) :: niter
      integer(int64) :: it
      real(real64) :: x
      x = 1._real64
      do it = 1, niter
         x = x * 1.0000001_real64 + 1.e-9_real64
      end do
      busy = x
   end function busy

end program mlb_driver
