!!======================================================================
!!                     ***  MODULE  mlb_oasis_shim  ***
!! C-callable wrappers (ISO_C_BINDING) around the OASIS3-MCT calls a
!! Python inference server needs, for OASIS builds without pyoasis.
!!======================================================================
!! Built as libmlb_oasis_shim.so and loaded with ctypes by
!! bridge/transport/oasis.py. Every routine is a C function returning an
!! int32 status: 0 on success, otherwise the OASIS kinfo (or -1 for a bad
!! argument). Strings come in as (char*, length) pairs.
!!
!! Written against the API of OASIS3-MCT 2.0 (Debian liboasis3):
!! oasis_init_comp has no communicator argument, put/get take 1D or 2D
!! real(8) arrays only, so 3D fields travel as flat (n, 1) arrays.
!!----------------------------------------------------------------------
!!   mlb_oasis_init_comp     : oasis_init_comp (called by Python)
!!   mlb_oasis_get_localcomm : oasis_get_localcomm
!!   mlb_oasis_def_partition : oasis_def_partition (any partition vector)
!!   mlb_oasis_def_var       : oasis_def_var of a flat real(8) field
!!   mlb_oasis_enddef        : oasis_enddef
!!   mlb_oasis_put_r8        : oasis_put of a flat real(8) array
!!   mlb_oasis_get_r8        : oasis_get into a flat real(8) array
!!   mlb_oasis_terminate     : oasis_terminate
!!   mlb_oasis_abort         : oasis_abort (does not return)
!!   mlb_oasis_info_codes    : the values of OASIS_Ok, OASIS_Sent, ... of this build
!!----------------------------------------------------------------------
module mlb_oasis_shim
   use, intrinsic :: iso_c_binding, only: c_int32_t, c_double, c_char
   use, intrinsic :: iso_fortran_env, only: int32
   use mod_oasis, only: oasis_init_comp, oasis_get_localcomm, oasis_def_partition, &
      &                 oasis_def_var, oasis_enddef, oasis_put, oasis_get, oasis_terminate, &
      &                 oasis_abort, oasis_in, oasis_out, oasis_double, oasis_ok, &
      &                 oasis_sent, oasis_recvd, oasis_sentout, oasis_recvout, oasis_torest, &
      &                 oasis_fromrest, oasis_output, oasis_input, oasis_torestout, &
      &                 oasis_fromrestout, oasis_loctrans
   implicit none
   private

   public :: mlb_oasis_init_comp      ! called by bridge/transport/oasis.py
   public :: mlb_oasis_get_localcomm  ! idem
   public :: mlb_oasis_def_partition  ! idem
   public :: mlb_oasis_def_var        ! idem
   public :: mlb_oasis_enddef         ! idem
   public :: mlb_oasis_put_r8         ! idem
   public :: mlb_oasis_get_r8         ! idem
   public :: mlb_oasis_terminate      ! idem
   public :: mlb_oasis_abort          ! idem
   public :: mlb_oasis_info_codes     ! idem

   integer(int32), parameter :: ERR_ARG = -1   ! a bad argument, found before calling OASIS
   integer(int32), parameter :: NAME_MAX = 128 ! ic_lvar of this OASIS version

contains

   function c_to_f(cstr, clen) result(fstr)
      !! (char*, length) -> Fortran string
      integer(c_int32_t), intent(in) :: clen
      character(kind=c_char), intent(in) :: cstr(clen)
      character(len=clen) :: fstr
      integer(int32) :: ji
      do ji = 1, clen
         fstr(ji:ji) = cstr(ji)
      end do
   end function c_to_f

   function mlb_oasis_init_comp(cname, clen, comp_id) result(status) &
      &     bind(C, name="mlb_oasis_init_comp")
      integer(c_int32_t), value, intent(in) :: clen
      character(kind=c_char), intent(in) :: cname(clen)
      integer(c_int32_t), intent(out) :: comp_id
      integer(c_int32_t) :: status
      integer(int32) :: id, ierr
      comp_id = -1
      if (clen < 1 .or. clen > NAME_MAX) then
         status = ERR_ARG
         return
      end if
      call oasis_init_comp(id, c_to_f(cname, clen), ierr)
      comp_id = id
      status = ierr
   end function mlb_oasis_init_comp

   function mlb_oasis_get_localcomm(fcomm) result(status) bind(C, name="mlb_oasis_get_localcomm")
      integer(c_int32_t), intent(out) :: fcomm   ! Fortran MPI handle (MPI.Comm.f2py in Python)
      integer(c_int32_t) :: status
      integer(int32) :: comm, ierr
      call oasis_get_localcomm(comm, ierr)
      fcomm = comm
      status = ierr
   end function mlb_oasis_get_localcomm

   function mlb_oasis_def_partition(paral, npar, global_size, part_id) result(status) &
      &     bind(C, name="mlb_oasis_def_partition")
      integer(c_int32_t), value, intent(in) :: npar         ! length of paral
      integer(c_int32_t), intent(in) :: paral(npar)         ! OASIS partition vector
      integer(c_int32_t), value, intent(in) :: global_size  ! grid size, <= 0: not given
      integer(c_int32_t), intent(out) :: part_id
      integer(c_int32_t) :: status
      integer(int32) :: id, ierr
      integer(int32), allocatable :: ipar(:)
      part_id = -1
      if (npar < 3) then
         status = ERR_ARG
         return
      end if
      ipar = paral
      if (global_size > 0) then
         call oasis_def_partition(id, ipar, ierr, global_size)
      else
         call oasis_def_partition(id, ipar, ierr)
      end if
      part_id = id
      status = ierr
   end function mlb_oasis_def_partition

   function mlb_oasis_def_var(cname, clen, part_id, direction, var_id) result(status) &
      &     bind(C, name="mlb_oasis_def_var")
      integer(c_int32_t), value, intent(in) :: clen
      character(kind=c_char), intent(in) :: cname(clen)
      integer(c_int32_t), value, intent(in) :: part_id
      integer(c_int32_t), value, intent(in) :: direction   ! 0: received (OASIS_In), 1: sent (OASIS_Out)
      integer(c_int32_t), intent(out) :: var_id
      integer(c_int32_t) :: status
      integer(int32) :: id, ierr, inout
      integer(int32) :: nodims(2), vshape(4)
      var_id = -1
      if (clen < 1 .or. clen > NAME_MAX .or. (direction /= 0 .and. direction /= 1)) then
         status = ERR_ARG
         return
      end if
      inout = merge(oasis_out, oasis_in, direction == 1)
      nodims = [2, 1]          ! a 2D array (flat points x 1), no bundle
      vshape = [1, 1, 1, 1]    ! not used by this version beyond its size
      call oasis_def_var(id, c_to_f(cname, clen), part_id, nodims, inout, vshape, oasis_double, ierr)
      var_id = id
      status = ierr
   end function mlb_oasis_def_var

   function mlb_oasis_enddef() result(status) bind(C, name="mlb_oasis_enddef")
      integer(c_int32_t) :: status
      integer(int32) :: ierr
      call oasis_enddef(ierr)
      status = ierr
   end function mlb_oasis_enddef

   function mlb_oasis_put_r8(var_id, date, n, field, info) result(status) &
      &     bind(C, name="mlb_oasis_put_r8")
      integer(c_int32_t), value, intent(in) :: var_id
      integer(c_int32_t), value, intent(in) :: date     ! seconds since the start of the run
      integer(c_int32_t), value, intent(in) :: n        ! points of the local partition
      real(c_double), intent(in) :: field(n, 1)
      integer(c_int32_t), intent(out) :: info           ! OASIS_Sent, OASIS_Ok, ... (see info_codes)
      integer(c_int32_t) :: status
      integer(int32) :: kinfo
      call oasis_put(var_id, date, field, kinfo)
      info = kinfo
      status = 0
   end function mlb_oasis_put_r8

   function mlb_oasis_get_r8(var_id, date, n, field, info) result(status) &
      &     bind(C, name="mlb_oasis_get_r8")
      integer(c_int32_t), value, intent(in) :: var_id
      integer(c_int32_t), value, intent(in) :: date
      integer(c_int32_t), value, intent(in) :: n
      real(c_double), intent(inout) :: field(n, 1)      ! left untouched when nothing is received
      integer(c_int32_t), intent(out) :: info
      integer(c_int32_t) :: status
      integer(int32) :: kinfo
      call oasis_get(var_id, date, field, kinfo)
      info = kinfo
      status = 0
   end function mlb_oasis_get_r8

   function mlb_oasis_terminate() result(status) bind(C, name="mlb_oasis_terminate")
      integer(c_int32_t) :: status
      integer(int32) :: ierr
      call oasis_terminate(ierr)
      status = ierr
   end function mlb_oasis_terminate

   function mlb_oasis_abort(comp_id, croutine, rlen, cmessage, mlen) result(status) &
      &     bind(C, name="mlb_oasis_abort")
      integer(c_int32_t), value, intent(in) :: comp_id
      integer(c_int32_t), value, intent(in) :: rlen, mlen
      character(kind=c_char), intent(in) :: croutine(rlen), cmessage(mlen)
      integer(c_int32_t) :: status
      call oasis_abort(comp_id, c_to_f(croutine, rlen), c_to_f(cmessage, mlen))
      status = 0   ! not reached: oasis_abort ends the job
   end function mlb_oasis_abort

   function mlb_oasis_info_codes(codes, n) result(status) bind(C, name="mlb_oasis_info_codes")
      !! codes(1:12) = Ok, Sent, Recvd, SentOut, RecvOut, ToRest, FromRest, Output, Input,
      !!               ToRestOut, FromRestOut, LocTrans
      integer(c_int32_t), value, intent(in) :: n
      integer(c_int32_t), intent(out) :: codes(n)
      integer(c_int32_t) :: status
      integer(int32) :: all(12)
      all = [oasis_ok, oasis_sent, oasis_recvd, oasis_sentout, oasis_recvout, oasis_torest, &
         &   oasis_fromrest, oasis_output, oasis_input, oasis_torestout, oasis_fromrestout, &
         &   oasis_loctrans]
      if (n < 12) then
         status = ERR_ARG
         return
      end if
      codes = 0
      codes(1:12) = all
      status = 0
   end function mlb_oasis_info_codes

end module mlb_oasis_shim
