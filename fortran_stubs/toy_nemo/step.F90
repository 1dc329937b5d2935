MODULE step
   !!======================================================================
   !!                         ***  MODULE  step  ***
   !! toy_nemo :  one time step: hook put, tendencies, hook get, AB3 update,
   !!             halo exchange, outputs, restart, run control
   !!======================================================================
   !!   stp : advance the model from step kt-1 to step kt
   !!----------------------------------------------------------------------
   !! Adams-Bashforth 3 for every term, one tendency evaluation per step:
   !!    x(n+1) = x(n) + dt ( 23 T(n) - 16 T(n-1) + 5 T(n-2) ) / 12 + dt x_tend
   !! started by forward Euler then AB2 (nab = tendencies already held);
   !! the two previous tendencies go into the restart (bit for bit restarts).
   !! With &namnudge ln_nudge, the nudging toward a truth follows the update
   !! (module nudging); without it nothing else changes.
   !!----------------------------------------------------------------------
   USE par_kind      , ONLY : wp
   USE mppini        , ONLY : jpi, jpj
   USE domain        , ONLY : rn_Dt, umask, vmask, tmask
   USE oce           , ONLY : jpk, un, vn, hn, uta, vta, hta, nnow, nm1, nm2, nab, u_tend, v_tend, h_tend
   USE dyn           , ONLY : dyn_tend
   USE lbclnk        , ONLY : lbc_lnk
   USE infmod        , ONLY : inf_put, inf_get
   USE nudging       , ONLY : ln_nudge, nud_step
   USE diawri        , ONLY : dia_wri
   USE rst           , ONLY : rst_write
   USE stpctl        , ONLY : stp_ctl
   USE in_out_manager, ONLY : nn_write, nn_stock, nn_itend

   IMPLICIT NONE
   PRIVATE

   PUBLIC   stp   ! called by nemogcm

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE stp( kt )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE stp  ***
      !! ** Purpose :   time step kt
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kt   ! time step index
      INTEGER ::   iswap
      !!------------------------------------------------------------------
      CALL inf_put( kt, un, vn, hn )                                                        ! closures start
      CALL dyn_tend( un, vn, hn, uta(:,:,:,nnow), vta(:,:,:,nnow), hta(:,:,:,nnow) )        ! model physics
      CALL inf_get( kt, u_tend, v_tend, h_tend )                                            ! closures end
      CALL stp_ab3
      IF( ln_nudge )   CALL nud_step( kt, un, vn, hn )                                   ! relaxation toward a truth
      CALL lbc_lnk( un, vn, hn )

      iswap = nm2   ;   nm2 = nm1   ;   nm1 = nnow   ;   nnow = iswap   ! tendency slots: n -> n-1 -> n-2
      nab = MIN( nab + 1, 2 )

      IF( nn_write > 0 ) THEN
         IF( MOD(kt, nn_write) == 0 )   CALL dia_wri( kt )
      ENDIF
      IF( nn_stock > 0 ) THEN
         IF( MOD(kt, nn_stock) == 0 .OR. kt == nn_itend )   CALL rst_write( kt )
      ENDIF
      CALL stp_ctl( kt )
   END SUBROUTINE stp


   SUBROUTINE stp_ab3
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE stp_ab3  ***
      !! ** Purpose :   AB3 update of u, v, h on the inner points, then the
      !!                external tendencies by forward Euler
      !!------------------------------------------------------------------
      INTEGER  ::   ji, jj, jk
      REAL(wp) ::   z0, z1, z2
      !!------------------------------------------------------------------
      SELECT CASE( nab )
      CASE( 0 )      ;   z0 = rn_Dt                          ;   z1 = 0._wp                          ;   z2 = 0._wp
      CASE( 1 )      ;   z0 = rn_Dt * 1.5_wp                 ;   z1 = - rn_Dt * 0.5_wp               ;   z2 = 0._wp
      CASE DEFAULT   ;   z0 = rn_Dt * 23._wp / 12._wp        ;   z1 = - rn_Dt * 16._wp / 12._wp      ;   z2 = rn_Dt * 5._wp / 12._wp
      END SELECT
      DO jk = 1, jpk
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               un(ji,jj,jk) = (  un(ji,jj,jk) + z0 * uta(ji,jj,jk,nnow) + z1 * uta(ji,jj,jk,nm1)   &
                  &            + z2 * uta(ji,jj,jk,nm2) + rn_Dt * u_tend(ji,jj,jk)  ) * umask(ji,jj)
               vn(ji,jj,jk) = (  vn(ji,jj,jk) + z0 * vta(ji,jj,jk,nnow) + z1 * vta(ji,jj,jk,nm1)   &
                  &            + z2 * vta(ji,jj,jk,nm2) + rn_Dt * v_tend(ji,jj,jk)  ) * vmask(ji,jj)
               hn(ji,jj,jk) = (  hn(ji,jj,jk) + z0 * hta(ji,jj,jk,nnow) + z1 * hta(ji,jj,jk,nm1)   &
                  &            + z2 * hta(ji,jj,jk,nm2) + rn_Dt * h_tend(ji,jj,jk)  ) * tmask(ji,jj)
            END DO
         END DO
      END DO
   END SUBROUTINE stp_ab3

   !!======================================================================
END MODULE step
