!!======================================================================
!!                   ***  PROGRAM  cgrid_west_model  ***
!! A small C-grid shallow-water model that is not NEMO-shaped, coupled
!! through mlbridge: the second test model of the coupling tests
!!======================================================================
!! What makes it unlike the toy (fortran_stubs/toy_nemo):
!!   - its input file is parameters.in (or the file named on the command
!!     line), "key = value" lines with # comments, read by its own parser;
!!     no namelist at all;
!!   - U points sit on the WEST face of the T cell: u(i, j) is at i - 1/2,
!!     between h(i-1, j) and h(i, j); v(i, j) on the SOUTH face, at j - 1/2
!!     (MITgcm-like). It tells mlbridge so (mlb_def_grid faces = 'west');
!!   - its own MPI decomposition: a Cartesian communicator (MPI_Cart_create
!!     on the communicator mlb_init returns) of px x py ranks, the last ranks
!!     of each direction taking the remainder cells.
!! Each step it fills its halos, sends h (T), u (U) and v (V) to the
!! servers, receives the tendencies dh (T), du (U) and dv (V) of the closure,
!! writes what it sent and received, then steps a linear shallow-water
!! update (forward-backward) with the received tendencies added:
!!   u <- (u - dt g (h(i) - h(i-1)) + dt du) umask
!!   v <- (v - dt g (h(j) - h(j-1)) + dt dv) vmask
!!   h <- (h - dt depth ((u(i+1) - u(i)) + (v(j+1) - v(j))) + dt dh) tmask
!! with umask(i, j) = tmask(i-1, j) tmask(i, j) (NEMO's rule on west faces).
!! A closed basin with a rectangular island (land = 1).
!! Output, rank by rank: <out>_r<rank>.bin (stream: for each step, the
!! interiors (i, j) of h, u, v as sent and dh, du, dv as received) and
!! <out>_r<rank>.txt (i0 j0 nx_loc ny_loc, 0-based). Exit status 0, or 1
!! after an MPI_Abort that ends every rank of the job (servers included).
!!----------------------------------------------------------------------
program cgrid_west_model
   use, intrinsic :: iso_fortran_env, only: real64, int32, error_unit, output_unit
   use mpi_f08
   use mlbridge, only: mlb_init, mlb_def_grid, mlb_def_field, mlb_enddef, mlb_put, mlb_get, &
      & mlb_finalize, mlb_error_message, MLB_SEND, MLB_RECV, MLB_OK
   implicit none

   !! parameters.in
   integer :: nx = 24, ny = 16, nsteps = 4, px = 0, py = 0, land = 1
   real(real64) :: dt = 0.1_real64, grav = 1._real64, depth = 1._real64
   character(len=16) :: faces = 'west', u_grid = 'U'
   character(len=128) :: out = 'cgrid'

   integer :: status, ierr, rank, nranks, comm_int, kt, iu, ji, jj
   integer :: dims(2), coords(2), i0, j0, nxl, nyl, west, east, south, north
   type(MPI_Comm) :: mcomm, cart
   character(len=256) :: pfile
   real(real64), allocatable :: h(:,:,:), u(:,:,:), v(:,:,:), dh(:,:,:), du(:,:,:), dv(:,:,:)
   real(real64), allocatable :: tmask(:,:), umask(:,:), vmask(:,:)
   integer(int32), allocatable :: land_mask(:,:)

   call get_command_argument(1, pfile)
   if (len_trim(pfile) == 0) pfile = 'parameters.in'

   !! the coupling first: every MPI call of the model then uses the communicator it returns
   call mlb_init(comm_int, status)
   call check(status, 'mlb_init')
   mcomm%MPI_VAL = comm_int
   call MPI_Comm_rank(mcomm, rank, ierr)
   call MPI_Comm_size(mcomm, nranks, ierr)
   call read_parameters(trim(pfile))

   !! own decomposition: a Cartesian communicator, remainder cells on the last ranks
   dims = [px, py]
   if (px * py /= nranks) dims = 0
   call MPI_Dims_create(nranks, 2, dims, ierr)
   call MPI_Cart_create(mcomm, 2, dims, [.false., .false.], .false., cart, ierr)
   call MPI_Cart_coords(cart, rank, 2, coords, ierr)
   call MPI_Cart_shift(cart, 0, 1, west, east, ierr)
   call MPI_Cart_shift(cart, 1, 1, south, north, ierr)
   call split(nx, dims(1), coords(1), i0, nxl)
   call split(ny, dims(2), coords(2), j0, nyl)

   allocate(h(0:nxl + 1, 0:nyl + 1, 1), u(0:nxl + 1, 0:nyl + 1, 1), v(0:nxl + 1, 0:nyl + 1, 1))
   allocate(dh(0:nxl + 1, 0:nyl + 1, 1), du(0:nxl + 1, 0:nyl + 1, 1), dv(0:nxl + 1, 0:nyl + 1, 1))
   allocate(tmask(0:nxl + 1, 0:nyl + 1), umask(nxl, nyl), vmask(nxl, nyl), land_mask(nxl, nyl))
   dh = 0._real64; du = 0._real64; dv = 0._real64
   do jj = 0, nyl + 1
      do ji = 0, nxl + 1
         tmask(ji, jj) = ocean(i0 + ji, j0 + jj)
         h(ji, jj, 1) = tmask(ji, jj) * (1._real64 + 0.25_real64 * real(mod(3 * (i0 + ji) + 5 * (j0 + jj), 11), real64))
         u(ji, jj, 1) = 0.125_real64 * real(mod(i0 + ji + 2 * (j0 + jj), 5), real64)
         v(ji, jj, 1) = 0.0625_real64 * real(mod(2 * (i0 + ji) + j0 + jj, 7), real64)
      end do
   end do
   do jj = 1, nyl
      do ji = 1, nxl
         umask(ji, jj) = tmask(ji - 1, jj) * tmask(ji, jj)   ! west face
         vmask(ji, jj) = tmask(ji, jj - 1) * tmask(ji, jj)   ! south face
      end do
   end do
   u(1:nxl, 1:nyl, 1) = u(1:nxl, 1:nyl, 1) * umask
   v(1:nxl, 1:nyl, 1) = v(1:nxl, 1:nyl, 1) * vmask
   land_mask = int(tmask(1:nxl, 1:nyl), int32)

   !! the coupling: grid, face convention, the fields and their C-grid points
   call mlb_def_grid(nx, ny, i0 + 1, j0 + 1, nxl, nyl, status, mask=land_mask, faces=trim(faces))
   call check(status, 'mlb_def_grid')
   call mlb_def_field('h', 1, MLB_SEND, 1, status, grid='T');          call check(status, 'mlb_def_field h')
   call mlb_def_field('u', 1, MLB_SEND, 1, status, grid=trim(u_grid)); call check(status, 'mlb_def_field u')
   call mlb_def_field('v', 1, MLB_SEND, 1, status, grid='V');          call check(status, 'mlb_def_field v')
   call mlb_def_field('dh', 1, MLB_RECV, 1, status, grid='T');         call check(status, 'mlb_def_field dh')
   call mlb_def_field('du', 1, MLB_RECV, 1, status, grid='U');         call check(status, 'mlb_def_field du')
   call mlb_def_field('dv', 1, MLB_RECV, 1, status, grid='V');         call check(status, 'mlb_def_field dv')
   call mlb_enddef(status)
   call check(status, 'mlb_enddef')

   block
      character(len=160) :: name
      write(name, '(a,a,i0)') trim(out), '_r', rank
      open(newunit=iu, file=trim(name)//'.txt', status='replace', action='write')
      write(iu, '(4(i0,1x))') i0, j0, nxl, nyl
      close(iu)
      open(newunit=iu, file=trim(name)//'.bin', access='stream', form='unformatted', status='replace', &
         & action='write')
   end block

   do kt = 1, nsteps
      call fill_halo(h); call fill_halo(u); call fill_halo(v)
      call mlb_put('h', kt, h, status, halo=1); call check(status, 'mlb_put h')
      call mlb_put('u', kt, u, status, halo=1); call check(status, 'mlb_put u')
      call mlb_put('v', kt, v, status, halo=1); call check(status, 'mlb_put v')
      call mlb_get('dh', kt, dh, status, halo=1); call check(status, 'mlb_get dh')
      call mlb_get('du', kt, du, status, halo=1); call check(status, 'mlb_get du')
      call mlb_get('dv', kt, dv, status, halo=1); call check(status, 'mlb_get dv')
      write(iu) h(1:nxl, 1:nyl, 1), u(1:nxl, 1:nyl, 1), v(1:nxl, 1:nyl, 1), &
         &      dh(1:nxl, 1:nyl, 1), du(1:nxl, 1:nyl, 1), dv(1:nxl, 1:nyl, 1)
      !! forward-backward: velocities from h, then h from the new velocities (west/south faces)
      do jj = 1, nyl
         do ji = 1, nxl
            u(ji, jj, 1) = (u(ji, jj, 1) - dt * grav * (h(ji, jj, 1) - h(ji - 1, jj, 1)) + dt * du(ji, jj, 1)) &
               &         * umask(ji, jj)
            v(ji, jj, 1) = (v(ji, jj, 1) - dt * grav * (h(ji, jj, 1) - h(ji, jj - 1, 1)) + dt * dv(ji, jj, 1)) &
               &         * vmask(ji, jj)
         end do
      end do
      call fill_halo(u); call fill_halo(v)
      do jj = 1, nyl
         do ji = 1, nxl
            h(ji, jj, 1) = (h(ji, jj, 1) - dt * depth * ((u(ji + 1, jj, 1) - u(ji, jj, 1)) &
               &         + (v(ji, jj + 1, 1) - v(ji, jj, 1))) + dt * dh(ji, jj, 1)) * tmask(ji, jj)
         end do
      end do
   end do
   close(iu)

   call mlb_finalize(status)
   call check(status, 'mlb_finalize')
   if (rank == 0) write(output_unit, '(a,i0,a)') 'cgrid_west_model: ', nsteps, ' steps done'

contains

   subroutine read_parameters(path)
      !! "key = value" lines; # starts a comment; unknown keys are an error naming file and key.
      character(len=*), intent(in) :: path
      character(len=256) :: line, key, val
      integer :: iu_p, ios, eq, lineno

      open(newunit=iu_p, file=path, status='old', action='read', iostat=ios)
      if (ios /= 0) call fail('cannot open '//path)
      lineno = 0
      do
         read(iu_p, '(a)', iostat=ios) line
         if (ios /= 0) exit
         lineno = lineno + 1
         if (index(line, '#') > 0) line = line(1:index(line, '#') - 1)
         if (len_trim(line) == 0) cycle
         eq = index(line, '=')
         if (eq == 0) call fail(path//': a line without "=": '//trim(line))
         key = adjustl(line(1:eq - 1)); val = adjustl(line(eq + 1:))
         select case (trim(key))
         case ('nx');      read(val, *, iostat=ios) nx
         case ('ny');      read(val, *, iostat=ios) ny
         case ('nsteps');  read(val, *, iostat=ios) nsteps
         case ('px');      read(val, *, iostat=ios) px
         case ('py');      read(val, *, iostat=ios) py
         case ('land');    read(val, *, iostat=ios) land
         case ('dt');      read(val, *, iostat=ios) dt
         case ('g');       read(val, *, iostat=ios) grav
         case ('depth');   read(val, *, iostat=ios) depth
         case ('faces');   faces = trim(val)
         case ('u_grid');  u_grid = trim(val)
         case ('out');     out = trim(val)
         case default
            call fail(path//': unknown key "'//trim(key)//'"')
         end select
         if (ios /= 0) call fail(path//': bad value for '//trim(key)//': '//trim(val))
      end do
      close(iu_p)
   end subroutine read_parameters


   pure real(real64) function ocean(gi, gj)
      !! 1 inside the basin and off the island, 0 elsewhere (gi, gj: 1-based global, 0 and n+1 outside).
      integer, intent(in) :: gi, gj
      ocean = 1._real64
      if (gi < 1 .or. gi > nx .or. gj < 1 .or. gj > ny) ocean = 0._real64
      if (land /= 0 .and. gi > nx / 3 .and. gi <= nx / 2 .and. gj > ny / 3 .and. gj <= (2 * ny) / 3) &
         & ocean = 0._real64
   end function ocean


   subroutine split(n, parts, me, start, length)
      !! cells of part me (0-based) of n cells in parts: the last n mod parts parts one longer.
      integer, intent(in) :: n, parts, me
      integer, intent(out) :: start, length
      integer :: base, extra
      base = n / parts; extra = mod(n, parts)
      length = base + merge(1, 0, me >= parts - extra)
      start = me * base + max(0, me - (parts - extra))
   end subroutine split


   subroutine fill_halo(a)
      !! the one-cell halo from the neighbours of the Cartesian communicator; 0 beyond the basin.
      real(real64), intent(inout) :: a(0:, 0:, :)
      real(real64) :: sbuf(max(nxl, nyl) + 2), rbuf(max(nxl, nyl) + 2)
      integer :: n
      n = nyl + 2
      a(0, :, 1) = 0._real64; a(nxl + 1, :, 1) = 0._real64
      sbuf(1:n) = a(nxl, :, 1)
      call MPI_Sendrecv(sbuf, n, MPI_DOUBLE_PRECISION, east, 1, rbuf, n, MPI_DOUBLE_PRECISION, west, 1, cart, &
         & MPI_STATUS_IGNORE, ierr)
      if (west /= MPI_PROC_NULL) a(0, :, 1) = rbuf(1:n)
      sbuf(1:n) = a(1, :, 1)
      call MPI_Sendrecv(sbuf, n, MPI_DOUBLE_PRECISION, west, 2, rbuf, n, MPI_DOUBLE_PRECISION, east, 2, cart, &
         & MPI_STATUS_IGNORE, ierr)
      if (east /= MPI_PROC_NULL) a(nxl + 1, :, 1) = rbuf(1:n)
      n = nxl + 2
      a(:, 0, 1) = 0._real64; a(:, nyl + 1, 1) = 0._real64
      sbuf(1:n) = a(:, nyl, 1)
      call MPI_Sendrecv(sbuf, n, MPI_DOUBLE_PRECISION, north, 3, rbuf, n, MPI_DOUBLE_PRECISION, south, 3, cart, &
         & MPI_STATUS_IGNORE, ierr)
      if (south /= MPI_PROC_NULL) a(:, 0, 1) = rbuf(1:n)
      sbuf(1:n) = a(:, 1, 1)
      call MPI_Sendrecv(sbuf, n, MPI_DOUBLE_PRECISION, south, 4, rbuf, n, MPI_DOUBLE_PRECISION, north, 4, cart, &
         & MPI_STATUS_IGNORE, ierr)
      if (north /= MPI_PROC_NULL) a(:, nyl + 1, 1) = rbuf(1:n)
   end subroutine fill_halo


   subroutine check(st, what)
      !! A failed mlbridge call: the message from this rank, then MPI_Abort, which ends every rank
      !! of the job, the servers included (a plain STOP on one rank would leave the others waiting).
      integer, intent(in) :: st
      character(len=*), intent(in) :: what
      character(len=4096) :: text
      if (st == MLB_OK) return
      call mlb_error_message(text)
      call fail(what//': '//trim(text))
   end subroutine check


   subroutine fail(msg)
      character(len=*), intent(in) :: msg
      integer :: me, ierr2
      call MPI_Comm_rank(MPI_COMM_WORLD, me, ierr2)
      write(error_unit, '(a,i0,a)') 'cgrid_west_model (world rank ', me, '): '//msg
      flush(error_unit)
      call MPI_Abort(MPI_COMM_WORLD, 1, ierr2)
   end subroutine fail

end program cgrid_west_model
