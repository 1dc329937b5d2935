MODULE stpctl
   !!======================================================================
   !!                       ***  MODULE  stpctl  ***
   !! toy_nemo :  run monitoring: time.step for progress, blow-up check
   !!======================================================================
   !!   stp_ctl : every 1% of the run and at its last step: write time.step
   !!             (rank 0), stop if |u| or |v| is too large or NaN or h <= 0
   !!----------------------------------------------------------------------
   USE, INTRINSIC :: ieee_arithmetic, ONLY : ieee_is_nan, ieee_is_finite
   USE par_kind      , ONLY : wp, lc
   USE lib_mpp       , ONLY : lwp, numout, ctl_stop, mpp_max
   USE mppini        , ONLY : jpi, jpj
   USE domain        , ONLY : tmask, rn_Dt
   USE oce           , ONLY : jpk, un, vn, hn, u_tend, v_tend, h_tend
   USE in_out_manager, ONLY : nn_it000, nn_itend

   IMPLICIT NONE
   PRIVATE

   PUBLIC   stp_ctl   ! called by step

   REAL(wp), PARAMETER ::   rumax = 20._wp   ! a speed above this [m s-1] is a blow-up

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE stp_ctl( kt )
      INTEGER, INTENT(in) ::   kt   ! time step just completed
      INTEGER  ::   ji, jj, jk, ifreq, inum, ios
      REAL(wp) ::   zumax, zhmin, znan, zuvt, zht
      CHARACTER(len=lc) ::   cmsg
      CHARACTER(len=2*lc) ::   cmsg2
      LOGICAL  ::   llext   ! the external tendencies alone explain the blow-up
      !!------------------------------------------------------------------
      ifreq = MAX( 1, (nn_itend - nn_it000 + 1) / 100 )
      IF( MOD(kt - nn_it000 + 1, ifreq) /= 0 .AND. kt /= nn_itend )   RETURN

      IF( lwp ) THEN
         OPEN( NEWUNIT=inum, FILE='time.step', STATUS='replace', ACTION='write', IOSTAT=ios, IOMSG=cmsg )
         IF( ios /= 0 )   CALL ctl_stop( 'stp_ctl: cannot write time.step: '//TRIM(cmsg) )
         WRITE(inum,'(i10)') kt
         CLOSE( inum )
      ENDIF

      zumax = 0._wp   ;   zhmin = HUGE(1._wp)   ;   znan = 0._wp
      DO jk = 1, jpk
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               zumax = MAX( zumax, ABS(un(ji,jj,jk)), ABS(vn(ji,jj,jk)) )
               IF( tmask(ji,jj) > 0.5_wp )   zhmin = MIN( zhmin, hn(ji,jj,jk) )
               IF( ieee_is_nan(un(ji,jj,jk)) .OR. ieee_is_nan(vn(ji,jj,jk)) .OR. ieee_is_nan(hn(ji,jj,jk)) )   &
                  &   znan = 1._wp
            END DO
         END DO
      END DO
      zumax = mpp_max( zumax )
      zhmin = - mpp_max( - zhmin )
      znan  = mpp_max( znan )
      IF( lwp )   WRITE(numout,'(a,i10,a,es12.4,a,es12.4)') ' stp_ctl: kt = ', kt, '  max |u|,|v| = ', zumax,   &
         &                                                  '  min h = ', zhmin
      IF( znan > 0.5_wp .OR. zumax > rumax .OR. zhmin <= 0._wp ) THEN
         ! every rank is here (the maxima above are global): the external tendencies of the step
         zuvt = mpp_max( MAX( MAXVAL(ABS(u_tend(2:jpi-1,2:jpj-1,:))), MAXVAL(ABS(v_tend(2:jpi-1,2:jpj-1,:))) ) )
         zht  = mpp_max( MAXVAL(ABS(h_tend(2:jpi-1,2:jpj-1,:))) )
         WRITE(cmsg,'(a,i0,a,es10.3,a,es10.3,a)') 'stp_ctl: the model blew up at step kt = ', kt,   &
            &   ' (max |u|,|v| = ', zumax, ' m/s, min h = ', zhmin, ' m, or NaN)'
         llext = .NOT. ( ieee_is_finite(zuvt) .AND. ieee_is_finite(zht) )   ! no comparison with a NaN
         IF( .NOT. llext )   llext = zuvt > rumax / rn_Dt
         IF( llext ) THEN
            ! the closures' tendencies alone move u, v faster than a blow-up in one step, or are NaN
            WRITE(cmsg2,'(a,a,es10.3,a,es10.3,a)') TRIM(cmsg), ': the external (closure) tendencies did it'// &
               &   ' (max |u_tend|,|v_tend| = ', zuvt, ' m s-2, |h_tend| = ', zht,                           &
               &   ' m s-1): check the closures; max_abs in coupling.toml bounds their outputs'
         ELSE IF( zuvt > 0._wp .OR. zht > 0._wp ) THEN
            WRITE(cmsg2,'(a,a,es10.3,a,es10.3,a)') TRIM(cmsg), ': reduce rn_Dt or raise the viscosity'//  &
               &   ' (external tendencies: max |u_tend|,|v_tend| = ', zuvt, ' m s-2, |h_tend| = ', zht, ' m s-1)'
         ELSE
            cmsg2 = TRIM(cmsg)//': reduce rn_Dt or raise the viscosity'
         ENDIF
         CALL ctl_stop( cmsg2, ld_all=.TRUE. )
      ENDIF
   END SUBROUTINE stp_ctl

   !!======================================================================
END MODULE stpctl
