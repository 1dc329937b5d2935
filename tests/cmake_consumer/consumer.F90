!!======================================================================
!!                     ***  PROGRAM  consumer  ***
!! The smallest coupled model: builds against an installed mlbridge with
!! find_package(MLBridge) or pkg-config, sends u, receives the "identity"
!! closure's output and checks that it came back unchanged. Exit status 0
!! when so. With the argument real32 it also sends u4 (real32) and checks
!! u4_back. Before the handshake it checks the error query: a refused
!! call returns its code and mlb_error_message says why.
!!======================================================================
program consumer
   use, intrinsic :: iso_fortran_env, only: real32, real64, error_unit
   use mpi_f08, only: MPI_Comm, MPI_Comm_rank, MPI_Comm_size, MPI_Abort, MPI_COMM_WORLD
   use mlbridge, only: mlb_init, mlb_def_grid, mlb_def_field, mlb_enddef, mlb_put, mlb_get, &
      & mlb_finalize, mlb_error_message, MLB_SEND, MLB_RECV, MLB_OK, MLB_ERR_ARG
   implicit none
   integer, parameter :: nx = 12, ny = 10, nz = 2
   integer :: icomm, status, rank, nranks, nyl, j0, kt, ji, jj, jk
   type(MPI_Comm) :: comm
   real(real64), allocatable :: u(:,:,:), u_back(:,:,:)
   real(real32), allocatable :: u4(:,:,:), u4_back(:,:,:)
   logical :: with_r4
   character(len=512) :: msg
   character(len=16) :: arg

   call get_command_argument(1, arg)
   with_r4 = arg == 'real32'
   call mlb_init(icomm, status);                  call check('mlb_init')
   comm%MPI_VAL = icomm
   call MPI_Comm_rank(comm, rank)
   call MPI_Comm_size(comm, nranks)
   nyl = ny / nranks
   j0 = 1 + rank * nyl
   if (rank == nranks - 1) nyl = ny - rank * nyl
   call mlb_def_grid(nx, ny, 1, j0, nx, nyl, status);          call check('mlb_def_grid')
   call mlb_def_field('two words', nz, MLB_SEND, 1, status)
   call mlb_error_message(msg)
   if (status /= MLB_ERR_ARG .or. index(msg, 'bad field name "two words"') == 0) then
      write(error_unit, '(a,i0,a)') 'consumer: a bad field name gave status ', status, ' and "'//trim(msg)//'"'
      call MPI_Abort(MPI_COMM_WORLD, 3)
   end if
   call mlb_def_field('u', nz, MLB_SEND, 1, status);           call check('mlb_def_field u')
   call mlb_def_field('u_back', nz, MLB_RECV, 1, status);      call check('mlb_def_field u_back')
   if (with_r4) then
      call mlb_def_field('u4', nz, MLB_SEND, 1, status, kind=real32);      call check('mlb_def_field u4')
      call mlb_def_field('u4_back', nz, MLB_RECV, 1, status, kind=real32); call check('mlb_def_field u4_back')
   end if
   call mlb_enddef(status);                                    call check('mlb_enddef')
   allocate(u(nx, nyl, nz), u_back(nx, nyl, nz), u4(nx, nyl, nz), u4_back(nx, nyl, nz))
   do kt = 1, 3
      do jk = 1, nz
         do jj = 1, nyl
            do ji = 1, nx
               u(ji, jj, jk) = real(ji + 100 * (j0 + jj - 1) + 10000 * jk + kt, real64)
            end do
         end do
      end do
      call mlb_put('u', kt, u, status);                        call check('mlb_put')
      if (with_r4) then
         u4(:,:,:) = real(u, real32) + 0.25_real32   ! exact in real32: the values are small integers
         call mlb_put('u4', kt, u4, status);                   call check('mlb_put u4')
      end if
      call mlb_get('u_back', kt, u_back, status);              call check('mlb_get')
      if (with_r4) then
         call mlb_get('u4_back', kt, u4_back, status);         call check('mlb_get u4_back')
      end if
      if (any(u_back /= u) .or. (with_r4 .and. any(u4_back /= u4))) then
         write(error_unit, '(a,i0,a,i0)') 'consumer: rank ', rank, ': wrong values back at step ', kt
         call MPI_Abort(MPI_COMM_WORLD, 2)
      end if
   end do
   call mlb_finalize(status);                                  call check('mlb_finalize')
   if (rank == 0 .and. with_r4) print '(a)', 'consumer: ok (real64 and real32)'
   if (rank == 0 .and. .not. with_r4) print '(a)', 'consumer: ok'

contains

   subroutine check(what)
      character(len=*), intent(in) :: what
      if (status == MLB_OK) return
      call mlb_error_message(msg)
      write(error_unit, '(a)') 'consumer: '//what//': '//trim(msg)
      call MPI_Abort(MPI_COMM_WORLD, 1)
   end subroutine check

end program consumer
