!!======================================================================
!!               ***  SUBMODULE  mlbridge_backend (OASIS)  ***
!! mlbridge library : transport = "oasis": the fields travel through
!!                    oasis_put / oasis_get instead of MPI messages
!!======================================================================
!! Compiled when CMake finds OASIS3-MCT (MLB_WITH_OASIS=ON), in place of
!! mlbridge_backend_none.F90: the same interface (mlbridge.F90). The
!! handshake stays on MPI: mlb_enddef learns from the servers' reply that
!! the transport is OASIS, then backend_start joins OASIS as component
!! 'mlbmod' (every rank of the job is in oasis_init_comp then: the servers
!! join as 'mlbsrv', bridge/oasis_server.py).
!!
!! A 3D field of nlev levels is a flat grid of nx*ny*nlev points, point
!! (i, j, k) (0-based) at i + nx*(j + ny*k); this rank's interior box is an
!! orange partition with one segment per (level, row) (merged where rows
!! follow each other in the flat space), so the local array is the box
!! (nx_loc, ny_loc, nlev) in Fortran order, passed as (nx_loc*ny_loc*nlev, 1):
!! the only shapes oasis_put/get of OASIS3-MCT 2.0 take. OASIS dates count
!! model steps from the first exchange (kt - kt0); the namcouple written by
!! `mlbridge run` uses the same unit.
!!----------------------------------------------------------------------
!!   backend_transports  : 'mpi oasis', for the report       (send_report)
!!   backend_start       : oasis_init_comp, partitions, fields, enddef (mlb_enddef)
!!   backend_put         : oasis_put of one field             (mlb_put)
!!   backend_get         : oasis_get of one field, due dates  (mlb_get)
!!   backend_take_lagged : lag 1, the outputs of kt - every   (mlb_put)
!!   backend_finish      : the last outputs, oasis_terminate  (mlb_finalize)
!!----------------------------------------------------------------------
submodule (mlbridge) mlbridge_backend
   use mod_oasis, only: oasis_init_comp, oasis_def_partition, oasis_def_var, oasis_enddef, &
      &                 oasis_put, oasis_get, oasis_terminate, oasis_in, oasis_out, &
      &                 oasis_double, oasis_ok
   implicit none

   character(len=*), parameter :: COMPONENT = 'mlbmod'   ! bridge/oasis_server.py

contains

   module function backend_transports() result(names)
      character(len=:), allocatable :: names
      names = 'mpi oasis'
   end function backend_transports


   module subroutine backend_start(cpl, status)
      !!------------------------------------------------------------------
      !! Join OASIS, define one flat partition per level count over this
      !! rank's interior box and one OASIS field per active mlbridge field
      !! (named as in mlb_def_field), then oasis_enddef. Collective over the job.
      !!------------------------------------------------------------------
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      integer(int32), allocatable :: part_of_nlev(:)
      integer(int32) :: ierr, jf, nlev, npts, inout
      character(len=512) :: msg

      allocate(cpl%flat(cpl%nx_loc * cpl%ny_loc * max(1, maxval(cpl%fields(1:cpl%nfields)%nlev)), 1))
      cpl%flat(:,:) = 0._real64
      call oasis_init_comp(cpl%oasis_comp, COMPONENT, ierr)
      if (ierr /= oasis_ok) then
         write(msg, '(a,i0)') 'oasis_init_comp('//COMPONENT//') failed with status ', ierr
         call set_error(cpl, MLB_ERR_OASIS, 'mlb_enddef: '//trim(msg), status); return
      end if
      allocate(cpl%oasis_var(cpl%nfields), part_of_nlev(maxval(cpl%fields(1:cpl%nfields)%nlev, &
         &     mask=cpl%fields(1:cpl%nfields)%active) + 1))
      cpl%oasis_var(:) = -1
      part_of_nlev(:) = -1
      do jf = 1, cpl%nfields
         if (.not. cpl%fields(jf)%active) cycle
         nlev = cpl%fields(jf)%nlev
         if (part_of_nlev(nlev) < 0) then
            call define_partition(cpl, nlev, part_of_nlev(nlev), ierr)
            if (ierr /= oasis_ok) then
               write(msg, '(a,i0,a,i0)') 'oasis_def_partition of ', nlev, ' levels failed with status ', ierr
               call set_error(cpl, MLB_ERR_OASIS, 'mlb_enddef: '//trim(msg), status); return
            end if
         end if
         npts = cpl%nx_loc * cpl%ny_loc * nlev
         inout = merge(oasis_out, oasis_in, cpl%fields(jf)%direction == MLB_SEND)
         call oasis_def_var(cpl%oasis_var(jf), trim(cpl%fields(jf)%name), part_of_nlev(nlev), [2, 1], inout, &
            &               [1, npts, 1, 1], oasis_double, ierr)
         if (ierr /= oasis_ok) then
            write(msg, '(a,i0)') 'oasis_def_var('//trim(cpl%fields(jf)%name)//') failed with status ', ierr
            call set_error(cpl, MLB_ERR_OASIS, 'mlb_enddef: '//trim(msg), status); return
         end if
      end do
      call oasis_enddef(ierr)
      if (ierr /= oasis_ok) then
         write(msg, '(a,i0)') 'oasis_enddef failed with status ', ierr
         call set_error(cpl, MLB_ERR_OASIS, 'mlb_enddef: '//trim(msg), status); return
      end if
      status = MLB_OK
   end subroutine backend_start


   module subroutine backend_put(cpl, jf, kt, pfield, status)
      !! oasis_put of field jf (its interior box, all its levels) at step kt: date kt - kt0.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kt
      real(real64), intent(in) :: pfield(:,:,:)
      integer, intent(out) :: status
      integer(int32) :: n, kinfo
      character(len=512) :: msg

      n = size(pfield)
      cpl%flat(1:n, 1) = reshape(pfield, [n])
      call oasis_put(cpl%oasis_var(jf), kt - cpl%kt0, cpl%flat(1:n, :), kinfo)
      if (kinfo < 0) then
         write(msg, '(a,i0,a,i0)') 'oasis_put at date ', kt - cpl%kt0, ' failed with info ', kinfo
         call set_error(cpl, MLB_ERR_OASIS, 'mlb_put('//trim(cpl%fields(jf)%name)//'): '//trim(msg), status); return
      end if
      status = MLB_OK
   end subroutine backend_put


   module subroutine backend_get(cpl, jf, kt, status)
      !! Due step kt: the store of received field jf holds the outputs of kt (lag 0) or of
      !! kt - every (lag 1; zeros before the first).
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kt
      integer, intent(out) :: status
      call catch_up(cpl, jf, kt - cpl%kt0 - cpl%lag * cpl%every, status)
   end subroutine backend_get


   module subroutine backend_take_lagged(cpl, kt, status)
      !! Lag 1, before the first put of step kt: take the outputs of kt - every now, since the
      !! dates a component gives OASIS must never go back (a get at kt - every after a put at kt
      !! aborts: "model seems to be running backwards"). mlb_get at kt then returns them.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: kt
      integer, intent(out) :: status
      integer :: jf

      status = MLB_OK
      do jf = 1, cpl%nfields
         if (.not. cpl%fields(jf)%active .or. cpl%fields(jf)%direction /= MLB_RECV) cycle
         call catch_up(cpl, jf, kt - cpl%kt0 - cpl%lag * cpl%every, status)
         if (status /= MLB_OK) return
      end do
   end subroutine backend_take_lagged


   module subroutine backend_finish(cpl, status)
      !! Take the outputs still due (those of the last exchange with lag 1) so that every
      !! oasis_put of the servers is matched, then oasis_terminate (MPI stays up). Collective.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      integer :: jf, ierr
      character(len=512) :: msg

      status = MLB_OK
      if (cpl%put_kt /= -huge(1)) then
         do jf = 1, cpl%nfields
            if (.not. cpl%fields(jf)%active .or. cpl%fields(jf)%direction /= MLB_RECV) cycle
            call catch_up(cpl, jf, cpl%put_kt - cpl%kt0, status)
            if (status /= MLB_OK) return
         end do
      end if
      call oasis_terminate(ierr)
      if (ierr /= oasis_ok) then
         write(msg, '(a,i0)') 'oasis_terminate failed with status ', ierr
         call set_error(cpl, MLB_ERR_OASIS, 'mlb_finalize: '//trim(msg), status); return
      end if
      deallocate(cpl%flat, cpl%oasis_var)
   end subroutine backend_finish

   !!----------------------------------------------------------------------
   !!                 routines of this submodule only
   !!----------------------------------------------------------------------

   subroutine define_partition(cpl, nlev, part_id, ierr)
      !! Orange partition of this rank's box on the flat grid of nlev levels: (global offset,
      !! length) of each (level, row), rows that follow each other in the flat space (a box of
      !! whole rows) merged: cheaper routing.
      type(mlb_coupling_t), intent(in) :: cpl
      integer(int32), intent(in) :: nlev
      integer(int32), intent(out) :: part_id, ierr
      integer(int32), allocatable :: ipar(:)
      integer(int32) :: jk, jj, iseg, ioff

      allocate(ipar(2 + 2 * cpl%ny_loc * nlev))
      ipar(1) = 3
      iseg = 0
      do jk = 0, nlev - 1
         do jj = cpl%gj0, cpl%gj0 + cpl%ny_loc - 1
            ioff = cpl%gi0 + cpl%nx_glo * (jj + cpl%ny_glo * jk)
            if (iseg > 0) then
               if (ipar(1 + 2 * iseg) + ipar(2 + 2 * iseg) == ioff) then
                  ipar(2 + 2 * iseg) = ipar(2 + 2 * iseg) + cpl%nx_loc
                  cycle
               end if
            end if
            iseg = iseg + 1
            ipar(1 + 2 * iseg) = ioff
            ipar(2 + 2 * iseg) = cpl%nx_loc
         end do
      end do
      ipar(2) = iseg
      call oasis_def_partition(part_id, ipar(1:2 + 2 * iseg), ierr, cpl%nx_glo * cpl%ny_glo * nlev)
   end subroutine define_partition


   subroutine catch_up(cpl, jf, kdate, status)
      !! oasis_get of field jf at every coupling date after the last one got, up to kdate, the
      !! last one kept in the store: OASIS delivers the dates of a field in order only.
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kdate
      integer, intent(out) :: status
      integer :: n, off, idate, kinfo
      real(real64) :: t0
      character(len=512) :: msg

      status = MLB_OK
      if (kdate < 0 .or. kdate <= cpl%fields(jf)%got_date) return
      n = cpl%nx_loc * cpl%ny_loc * cpl%fields(jf)%nlev
      off = cpl%fields(jf)%lev_offset * cpl%nx_loc * cpl%ny_loc
      t0 = MPI_Wtime()
      idate = 0
      if (cpl%fields(jf)%got_date >= 0) idate = cpl%fields(jf)%got_date + cpl%every
      do while (idate <= kdate)
         call oasis_get(cpl%oasis_var(jf), idate, cpl%flat(1:n, :), kinfo)
         if (kinfo < 0) then
            write(msg, '(a,i0,a,i0)') 'oasis_get at date ', idate, ' failed with info ', kinfo
            call set_error(cpl, MLB_ERR_OASIS, 'mlb_get('//trim(cpl%fields(jf)%name)//'): '//trim(msg), status)
            return
         end if
         cpl%fields(jf)%got_date = idate
         idate = idate + cpl%every
      end do
      cpl%store(off + 1:off + n) = cpl%flat(1:n, 1)
      cpl%t_wait = cpl%t_wait + (MPI_Wtime() - t0)
   end subroutine catch_up

end submodule mlbridge_backend
