MODULE ldfdyn
   !!======================================================================
   !!                       ***  MODULE  ldfdyn  ***
   !! toy_nemo :  lateral viscosity on one layer, Laplacian in rotational-
   !!             divergent form; biharmonic = this operator applied twice
   !!======================================================================
   !!   ldf_init : allocate the work arrays
   !!   ldf_lap  : pua += pcoef * umask * lap(u),  pva += pcoef * vmask * lap(v)
   !!----------------------------------------------------------------------
   !! lap(u) = grad(div) - k x grad(curl); the curl uses fmask, so the lateral
   !! condition (free slip rn_shlat = 0, no slip rn_shlat = 2) comes from it.
   !!----------------------------------------------------------------------
   USE par_kind, ONLY : wp
   USE mppini  , ONLY : jpi, jpj
   USE domain  , ONLY : e1u, e2u, e1v, e2v, r1_e1u, r1_e2u, r1_e1v, r1_e2v,   &
      &                 r1_e1e2t, r1_e1e2f, umask, vmask, fmask

   IMPLICIT NONE
   PRIVATE

   PUBLIC   ldf_init   ! called by nemogcm
   PUBLIC   ldf_lap    ! called by dyn

   REAL(wp), ALLOCATABLE, DIMENSION(:,:) ::   zdiv, zcur   ! divergence (T), curl (F)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE ldf_init
      ALLOCATE( zdiv(jpi,jpj), zcur(jpi,jpj) )
      zdiv(:,:) = 0._wp   ;   zcur(:,:) = 0._wp
   END SUBROUTINE ldf_init


   SUBROUTINE ldf_lap( pu, pv, pua, pva, pcoef )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE ldf_lap  ***
      !! ** Purpose :   add pcoef times the Laplacian of (pu, pv) to (pua, pva)
      !!                on the inner points (pu, pv need a valid halo)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(jpi,jpj), INTENT(in   ) ::   pu, pv     ! velocity of one layer
      REAL(wp), DIMENSION(jpi,jpj), INTENT(inout) ::   pua, pva   ! tendencies of that layer
      REAL(wp)                    , INTENT(in   ) ::   pcoef      ! viscosity [m2 s-1] (or 1)
      INTEGER ::   ji, jj
      !!------------------------------------------------------------------
      DO jj = 2, jpj
         DO ji = 2, jpi
            zdiv(ji,jj) = (  e2u(ji,jj) * pu(ji,jj) - e2u(ji-1,jj) * pu(ji-1,jj)     &
               &           + e1v(ji,jj) * pv(ji,jj) - e1v(ji,jj-1) * pv(ji,jj-1)  ) * r1_e1e2t(ji,jj)
         END DO
      END DO
      DO jj = 1, jpj-1
         DO ji = 1, jpi-1
            zcur(ji,jj) = (  e2v(ji+1,jj) * pv(ji+1,jj) - e2v(ji,jj) * pv(ji,jj)     &
               &           - e1u(ji,jj+1) * pu(ji,jj+1) + e1u(ji,jj) * pu(ji,jj)  ) * r1_e1e2f(ji,jj) * fmask(ji,jj)
         END DO
      END DO
      DO jj = 2, jpj-1
         DO ji = 2, jpi-1
            pua(ji,jj) = pua(ji,jj) + pcoef * umask(ji,jj) * (  ( zdiv(ji+1,jj) - zdiv(ji,jj) ) * r1_e1u(ji,jj)    &
               &                                              - ( zcur(ji,jj) - zcur(ji,jj-1) ) * r1_e2u(ji,jj)  )
            pva(ji,jj) = pva(ji,jj) + pcoef * vmask(ji,jj) * (  ( zdiv(ji,jj+1) - zdiv(ji,jj) ) * r1_e2v(ji,jj)    &
               &                                              + ( zcur(ji,jj) - zcur(ji-1,jj) ) * r1_e1v(ji,jj)  )
         END DO
      END DO
   END SUBROUTINE ldf_lap

   !!======================================================================
END MODULE ldfdyn
