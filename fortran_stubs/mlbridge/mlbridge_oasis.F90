!!======================================================================
!!                    ***  MODULE  mlbridge_oasis  ***
!! OASIS3-MCT backend of the mlbridge library: the fields travel through
!! oasis_put / oasis_get instead of MPI messages (transport = "oasis")
!!======================================================================
!! Compiled into libmlbridge when CMake finds OASIS3-MCT (MLB_WITH_OASIS);
!! only mlbridge.F90 uses it. The handshake stays on MPI: mlb_enddef learns
!! from the servers' reply that the transport is OASIS, then calls
!! mlbo_start, which joins OASIS as component 'mlbmodel' (every rank of the
!! job is in oasis_init_comp then: the servers join as 'mlbsrv').
!!
!! A 3D field of nlev levels is a flat grid of nx*ny*nlev points, point
!! (i, j, k) (0-based) at i + nx*(j + ny*k); this rank's interior box is an
!! orange partition with one segment per (level, row) (merged where rows
!! follow each other in the flat space), so the local array
!! is the box (nx_loc, ny_loc, nlev) in Fortran order, passed as
!! (nx_loc*ny_loc*nlev, 1): the only shapes oasis_put/get of OASIS3-MCT 2.0
!! take. OASIS dates count model steps from the first exchange (kt - kt0);
!! the namcouple written by `mlbridge run` uses the same unit.
!!----------------------------------------------------------------------
!!   mlbo_start : oasis_init_comp, partitions and fields, oasis_enddef
!!   mlbo_put   : oasis_put of one field at a date
!!   mlbo_get   : oasis_get of one field at a date
!!   mlbo_stop  : oasis_terminate
!!----------------------------------------------------------------------
module mlbridge_oasis
   use, intrinsic :: iso_fortran_env, only: int32, real64
   use mod_oasis, only: oasis_init_comp, oasis_def_partition, oasis_def_var, oasis_enddef, &
      &                 oasis_put, oasis_get, oasis_terminate, oasis_in, oasis_out, &
      &                 oasis_double, oasis_ok
   implicit none
   private

   public :: mlbo_start   ! called by mlb_enddef (mlbridge.F90)
   public :: mlbo_put     ! called by mlb_put
   public :: mlbo_get     ! called by mlb_get and mlb_finalize
   public :: mlbo_stop    ! called by mlb_finalize

   character(len=*), parameter, public :: MLBO_COMPONENT = 'mlbmod'  ! bridge/oasis_server.py
   integer(int32), parameter, public :: MLBO_OK = 0

   integer(int32) :: comp_id = -1
   integer(int32), allocatable :: var_id(:)    ! OASIS field of each mlbridge field (-1: none)

contains

   subroutine mlbo_start(nx_glo, ny_glo, gi0, gj0, nx_loc, ny_loc, names, nlevs, sends, active, &
      &                  status, msg)
      !!------------------------------------------------------------------
      !! Join OASIS, define one flat partition per level count over this
      !! rank's interior box ([gi0, gi0+nx_loc) x [gj0, gj0+ny_loc), 0-based)
      !! and one OASIS field per active mlbridge field (named as in
      !! mlb_def_field), then oasis_enddef. Collective over the whole job.
      !!------------------------------------------------------------------
      integer(int32), intent(in) :: nx_glo, ny_glo, gi0, gj0, nx_loc, ny_loc
      character(len=*), intent(in) :: names(:)
      integer(int32), intent(in) :: nlevs(:)
      logical, intent(in) :: sends(:), active(:)
      integer(int32), intent(out) :: status
      character(len=*), intent(out) :: msg
      integer(int32), allocatable :: part_of_nlev(:), ipar(:)
      integer(int32) :: ierr, jf, jk, jj, iseg, ioff, nlev, npts

      msg = ''
      call oasis_init_comp(comp_id, MLBO_COMPONENT, ierr)
      if (ierr /= oasis_ok) then
         write(msg, '(a,i0)') 'oasis_init_comp('//MLBO_COMPONENT//') failed with status ', ierr
         status = ierr; return
      end if
      allocate(var_id(size(names)), part_of_nlev(maxval(nlevs, mask=active) + 1))
      var_id(:) = -1
      part_of_nlev(:) = -1
      do jf = 1, size(names)
         if (.not. active(jf)) cycle
         nlev = nlevs(jf)
         if (part_of_nlev(nlev) < 0) then
            ! orange partition: (global offset, length) of each (level, row) of the box, rows that
            ! follow each other in the flat space (a box of whole rows) merged: cheaper routing
            allocate(ipar(2 + 2 * ny_loc * nlev))
            ipar(1) = 3
            iseg = 0
            do jk = 0, nlev - 1
               do jj = gj0, gj0 + ny_loc - 1
                  ioff = gi0 + nx_glo * (jj + ny_glo * jk)
                  if (iseg > 0) then
                     if (ipar(1 + 2 * iseg) + ipar(2 + 2 * iseg) == ioff) then
                        ipar(2 + 2 * iseg) = ipar(2 + 2 * iseg) + nx_loc
                        cycle
                     end if
                  end if
                  iseg = iseg + 1
                  ipar(1 + 2 * iseg) = ioff
                  ipar(2 + 2 * iseg) = nx_loc
               end do
            end do
            ipar(2) = iseg
            call oasis_def_partition(part_of_nlev(nlev), ipar(1:2 + 2 * iseg), ierr, nx_glo * ny_glo * nlev)
            deallocate(ipar)
            if (ierr /= oasis_ok) then
               write(msg, '(a,i0,a,i0)') 'oasis_def_partition of ', nlev, ' levels failed with status ', ierr
               status = ierr; return
            end if
         end if
         npts = nx_loc * ny_loc * nlev
         if (sends(jf)) then
            call oasis_def_var(var_id(jf), trim(names(jf)), part_of_nlev(nlev), [2, 1], oasis_out, &
               &               [1, npts, 1, 1], oasis_double, ierr)
         else
            call oasis_def_var(var_id(jf), trim(names(jf)), part_of_nlev(nlev), [2, 1], oasis_in, &
               &               [1, npts, 1, 1], oasis_double, ierr)
         end if
         if (ierr /= oasis_ok) then
            write(msg, '(a,i0)') 'oasis_def_var('//trim(names(jf))//') failed with status ', ierr
            status = ierr; return
         end if
      end do
      call oasis_enddef(ierr)
      if (ierr /= oasis_ok) then
         write(msg, '(a,i0)') 'oasis_enddef failed with status ', ierr
         status = ierr; return
      end if
      status = MLBO_OK
   end subroutine mlbo_start


   subroutine mlbo_put(jf, kdate, pflat, status, msg)
      !! oasis_put of field jf (its interior box, flat, Fortran order) at date kdate.
      integer(int32), intent(in) :: jf, kdate
      real(real64), intent(in) :: pflat(:, :)
      integer(int32), intent(out) :: status
      character(len=*), intent(out) :: msg
      integer(int32) :: kinfo

      msg = ''
      call oasis_put(var_id(jf), kdate, pflat, kinfo)
      if (kinfo < 0) then
         write(msg, '(a,i0,a,i0)') 'oasis_put at date ', kdate, ' failed with info ', kinfo
         status = kinfo; return
      end if
      status = MLBO_OK
   end subroutine mlbo_put


   subroutine mlbo_get(jf, kdate, pflat, status, msg)
      !! oasis_get of field jf at date kdate into pflat (waits for the servers' put).
      integer(int32), intent(in) :: jf, kdate
      real(real64), intent(inout) :: pflat(:, :)
      integer(int32), intent(out) :: status
      character(len=*), intent(out) :: msg
      integer(int32) :: kinfo

      msg = ''
      call oasis_get(var_id(jf), kdate, pflat, kinfo)
      if (kinfo < 0) then
         write(msg, '(a,i0,a,i0)') 'oasis_get at date ', kdate, ' failed with info ', kinfo
         status = kinfo; return
      end if
      status = MLBO_OK
   end subroutine mlbo_get


   subroutine mlbo_stop(status, msg)
      !! oasis_terminate (MPI stays up: the model or mlb_init started it).
      integer(int32), intent(out) :: status
      character(len=*), intent(out) :: msg
      integer(int32) :: ierr

      msg = ''
      call oasis_terminate(ierr)
      if (ierr /= oasis_ok) then
         write(msg, '(a,i0)') 'oasis_terminate failed with status ', ierr
         status = ierr; return
      end if
      if (allocated(var_id)) deallocate(var_id)
      status = MLBO_OK
   end subroutine mlbo_stop

end module mlbridge_oasis
