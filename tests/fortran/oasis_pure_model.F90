!!======================================================================
!!                    ***  PROGRAM  oasis_pure_model  ***
!! A model that couples through OASIS3-MCT only, as a NEMO built with
!! key_oasis3 does: it knows nothing of mlbridge.
!!======================================================================
!! Reads &nampure from ./namelist_pure. N = nn_jpni x nn_jpnj ranks, each
!! owning a box of the global nn_nx x nn_ny x nn_nz grid (the split of
!! NEMO's mpp_basesplit: larger boxes first, rank = ri + nn_jpni * rj).
!! The 3D fields are described to OASIS as a flat grid of nx*ny*nz
!! points, global index i + nx*(j + ny*k) (0-based); each rank's orange
!! partition has one segment per (level, row) of its box, so its local
!! array (bx, by, nz) in Fortran order is the segments one after another.
!!
!! Every coupling step kt (date (kt - nn_it000) * rn_dt seconds) it puts
!! u, v (analytic polynomials of the global indices, exact in binary) and
!! gets u_tend, v_tend back. Rank r writes what it got to received_<r>.txt:
!!    kt field i j k value      (i, j, k global, 1-based)
!! and a last line "END <steps>" once oasis_terminate has returned.
!! Test hook: nn_nan_kt >= 0 puts a NaN into u at step nn_nan_kt, at the
!! global point (nn_nan_i, nn_nan_j, nn_nan_k) (1-based).
!!----------------------------------------------------------------------
program oasis_pure_model
   use, intrinsic :: iso_fortran_env, only: int32, real64, error_unit
   use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
   use mpi
   use mod_oasis, only: oasis_init_comp, oasis_get_localcomm, oasis_def_partition, &
      &                 oasis_def_var, oasis_enddef, oasis_put, oasis_get, oasis_terminate, &
      &                 oasis_abort, oasis_in, oasis_out, oasis_double, oasis_ok
   implicit none

   integer(int32), parameter :: NF = 2
   ! namelist &nampure
   character(len=128) :: cn_comp = 'ocnmod'
   integer(int32) :: nn_nx = 12, nn_ny = 10, nn_nz = 3, nn_jpni = 1, nn_jpnj = 1
   integer(int32) :: nn_it000 = 1, nn_itend = 3, rn_dt = 3600
   character(len=128) :: cn_snd(NF) = ['O_U    ', 'O_V    ']
   character(len=128) :: cn_rcv(NF) = ['O_UTND ', 'O_VTND ']
   integer(int32) :: nn_nan_kt = -1, nn_nan_i = 1, nn_nan_j = 1, nn_nan_k = 1
   namelist /nampure/ cn_comp, nn_nx, nn_ny, nn_nz, nn_jpni, nn_jpnj, nn_it000, nn_itend, &
      &               rn_dt, cn_snd, cn_rcv, nn_nan_kt, nn_nan_i, nn_nan_j, nn_nan_k

   integer(int32) :: icomp, icomm, irank, isize, ierr, ios, inum, ipart, kinfo
   integer(int32) :: ri, rj, i0, i1, j0, j1, bx, by, npts, iseg
   integer(int32) :: ji, jj, jk, jf, kt, idate
   integer(int32) :: isnd(NF), ircv(NF)
   integer(int32), allocatable :: ipar(:)
   real(real64), allocatable :: zsnd(:, :, :, :), zrcv(:, :, :, :)
   character(len=64) :: cfile
   character(len=512) :: cmsg

   ! the component name comes from the namelist, so it is read before OASIS (and MPI) start
   open(newunit=inum, file='namelist_pure', status='old', action='read', iostat=ios)
   if (ios == 0) read(inum, nml=nampure, iostat=ios)
   if (ios /= 0) then
      write(error_unit, '(a)') 'E R R O R  oasis_pure_model: cannot read &nampure from namelist_pure'
      error stop 1
   end if
   close(inum)
   call oasis_init_comp(icomp, trim(cn_comp), ierr)
   if (ierr /= oasis_ok) error stop 1
   call oasis_get_localcomm(icomm, ierr)
   call mpi_comm_rank(icomm, irank, ierr)
   call mpi_comm_size(icomm, isize, ierr)
   if (nn_jpni * nn_jpnj /= isize) then
      write(cmsg, '(a,i0,a,i0,a,i0,a)') 'nampure: nn_jpni x nn_jpnj = ', nn_jpni, ' x ', nn_jpnj, &
         &  ' but the component has ', isize, ' ranks'
      call fail(trim(cmsg))
   end if

   ! this rank's box, half-open, 0-based
   ri = mod(irank, nn_jpni)
   rj = irank / nn_jpni
   call basesplit(nn_nx, nn_jpni, ri, i0, i1)
   call basesplit(nn_ny, nn_jpnj, rj, j0, j1)
   bx = i1 - i0
   by = j1 - j0
   npts = bx * by * nn_nz

   ! orange partition: one segment (global offset, length) per (level, row)
   allocate(ipar(2 + 2 * by * nn_nz))
   ipar(1) = 3
   ipar(2) = by * nn_nz
   iseg = 0
   do jk = 1, nn_nz
      do jj = j0, j1 - 1
         ipar(3 + 2 * iseg) = i0 + nn_nx * (jj + nn_ny * (jk - 1))
         ipar(4 + 2 * iseg) = bx
         iseg = iseg + 1
      end do
   end do
   call oasis_def_partition(ipart, ipar, ierr, nn_nx * nn_ny * nn_nz)
   if (ierr /= oasis_ok) call fail('oasis_def_partition failed')
   do jf = 1, NF
      call oasis_def_var(isnd(jf), trim(cn_snd(jf)), ipart, [2, 1], oasis_out, [1, npts, 1, 1], &
         &               oasis_double, ierr)
      if (ierr /= oasis_ok) call fail('oasis_def_var failed for '//trim(cn_snd(jf)))
      call oasis_def_var(ircv(jf), trim(cn_rcv(jf)), ipart, [2, 1], oasis_in, [1, npts, 1, 1], &
         &               oasis_double, ierr)
      if (ierr /= oasis_ok) call fail('oasis_def_var failed for '//trim(cn_rcv(jf)))
   end do
   call oasis_enddef(ierr)
   if (ierr /= oasis_ok) call fail('oasis_enddef failed')

   allocate(zsnd(bx, by, nn_nz, NF), zrcv(bx, by, nn_nz, NF))
   write(cfile, '(a,i0,a)') 'received_', irank, '.txt'
   open(newunit=inum, file=trim(cfile), status='replace', action='write')
   write(inum, '(a)') '# kt field i j k value'
   do kt = nn_it000, nn_itend
      idate = (kt - nn_it000) * rn_dt
      do jk = 1, nn_nz
         do jj = 1, by
            do ji = 1, bx
               zsnd(ji, jj, jk, 1) = upoly(i0 + ji - 1, j0 + jj - 1, jk, kt)
               zsnd(ji, jj, jk, 2) = vpoly(i0 + ji - 1, j0 + jj - 1, jk, kt)
            end do
         end do
      end do
      if (kt == nn_nan_kt) then
         ji = nn_nan_i - i0
         jj = nn_nan_j - j0
         if (ji >= 1 .and. ji <= bx .and. jj >= 1 .and. jj <= by) &
            &  zsnd(ji, jj, nn_nan_k, 1) = ieee_value(1._real64, ieee_quiet_nan)
      end if
      do jf = 1, NF
         call oasis_put(isnd(jf), idate, reshape(zsnd(:, :, :, jf), [npts, 1]), kinfo)
      end do
      do jf = 1, NF
         call get_field(ircv(jf), idate, zrcv(:, :, :, jf), kinfo)
         do jk = 1, nn_nz
            do jj = 1, by
               do ji = 1, bx
                  write(inum, '(i0,1x,i0,1x,i0,1x,i0,1x,i0,1x,es25.17e3)') kt, jf, &
                     &  i0 + ji, j0 + jj, jk, zrcv(ji, jj, jk, jf)
               end do
            end do
         end do
      end do
   end do
   call oasis_terminate(ierr)
   write(inum, '(a,1x,i0)') 'END', nn_itend - nn_it000 + 1
   close(inum)

contains

   pure function upoly(ki, kj, kk, kt) result(pval)
      !! u at global 0-based (ki, kj), level kk, step kt: exact in binary for small grids
      integer(int32), intent(in) :: ki, kj, kk, kt
      real(real64) :: pval
      pval = 0.5_real64 * ki * ki + 0.25_real64 * kj * kj * kj + kk + 0.125_real64 * kt
   end function upoly

   pure function vpoly(ki, kj, kk, kt) result(pval)
      integer(int32), intent(in) :: ki, kj, kk, kt
      real(real64) :: pval
      pval = 0.375_real64 * ki * ki * ki - 0.5_real64 * kj * kj + 2.0_real64 * ki * kj &
         &   + 3.0_real64 * kk - 0.25_real64 * kt
   end function vpoly

   subroutine get_field(kvar, kdate, pfld, kinfo)
      !! oasis_get into a 3D box through the flat 2D array this version accepts
      integer(int32), intent(in) :: kvar, kdate
      real(real64), intent(inout) :: pfld(:, :, :)
      integer(int32), intent(out) :: kinfo
      real(real64), allocatable :: zflat(:, :)
      zflat = reshape(pfld, [size(pfld), 1])
      call oasis_get(kvar, kdate, zflat, kinfo)
      pfld = reshape(zflat(:, 1), shape(pfld))
   end subroutine get_field

   subroutine basesplit(kn, kparts, kp, k0, k1)
      !! part kp (0-based) of kn cells split in kparts, larger parts first
      integer(int32), intent(in) :: kn, kparts, kp
      integer(int32), intent(out) :: k0, k1
      integer(int32) :: ibase, iextra
      ibase = kn / kparts
      iextra = mod(kn, kparts)
      k0 = kp * ibase + min(kp, iextra)
      k1 = k0 + ibase
      if (kp < iextra) k1 = k1 + 1
   end subroutine basesplit

   subroutine fail(cdmsg)
      character(len=*), intent(in) :: cdmsg
      write(error_unit, '(a,1x,a)') 'E R R O R  oasis_pure_model:', cdmsg
      call oasis_abort(icomp, 'oasis_pure_model', cdmsg)
   end subroutine fail

end program oasis_pure_model
