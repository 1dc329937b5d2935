MODULE dyn
   !!======================================================================
   !!                         ***  MODULE  dyn  ***
   !! toy_nemo :  tendencies of the N-layer reduced-gravity isopycnal model
   !!             (momentum in vector-invariant form, continuity in flux form)
   !!======================================================================
   !!   dyn_init : allocate work arrays
   !!   dyn_tend : du/dt, dv/dt, dh/dt of every layer for one step
   !!----------------------------------------------------------------------
   !! Per layer k (abyss N+1 at rest):
   !!   du/dt =  q V  - d/dx( P_k + K ) + D_u + tau_x/(rho0 max(h1,hmin)) [k=1] - r u [k=N]
   !!   dv/dt = -q U  - d/dy( P_k + K ) + D_v                              - r v [k=N]
   !!   dh/dt = -div( h u ) + div( aeiv grad h )   (thickness diffusion, GM in layer form)
   !! q = (f + zeta) / h_f potential vorticity at f points, (U, V) = (e2u h_u u, e1v h_v v)
   !! mass fluxes with centred thickness (h_u = mean of the 2 neighbours),
   !! q V and q U by the energy-conserving scheme of Sadourny (NEMO's ENE),
   !! K = (u^2 + v^2)/2 at T points (NEMO's dynkeg 2nd order),
   !! P_k = sum_j gamma_max(j,k) h_j, gamma_m = g'(N+1-m)/N, i.e. one O(N) sweep
   !!   P_N = (g'/N) S_N,  P_k = P_k+1 + (g'/N) S_k,  S_k = sum_{j<=k} h_j.
   !!----------------------------------------------------------------------
   USE par_kind  , ONLY : wp
   USE mppini    , ONLY : jpi, jpj
   USE domain    , ONLY : e2u, e1v, e2v, e1u, r1_e1u, r1_e2v, r1_e1e2t, r1_e1e2f,   &
      &                   umask, vmask, tmask, fmask, r1_nf, rland_f, ff_f
   USE usrdef_nam, ONLY : rn_gprime, rn_rho0, rn_hmin, rn_rfr, rn_ahm, rn_bhm, rn_aeiv
   USE sbcwnd    , ONLY : utau
   USE ldfdyn    , ONLY : ldf_lap
   USE lbclnk    , ONLY : lbc_lnk

   IMPLICIT NONE
   PRIVATE

   PUBLIC   dyn_init   ! called by nemogcm
   PUBLIC   dyn_tend   ! called by step

   INTEGER ::   jpk                                                  ! number of layers
   REAL(wp), ALLOCATABLE, DIMENSION(:,:)   ::   zUf, zVf, zB, zq     ! one layer's fluxes, Bernoulli, PV
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zp                   ! pressure / rho0 of every layer
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zlu, zlv             ! Laplacian of u, v (biharmonic)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE dyn_init( kpk )
      INTEGER, INTENT(in) ::   kpk   ! number of layers
      jpk = kpk
      ALLOCATE( zUf(jpi,jpj), zVf(jpi,jpj), zB(jpi,jpj), zq(jpi,jpj), zp(jpi,jpj,jpk) )
      zUf(:,:) = 0._wp   ;   zVf(:,:) = 0._wp   ;   zB(:,:) = 0._wp   ;   zq(:,:) = 0._wp
      IF( rn_bhm > 0._wp ) THEN
         ALLOCATE( zlu(jpi,jpj,jpk), zlv(jpi,jpj,jpk) )
         zlu(:,:,:) = 0._wp   ;   zlv(:,:,:) = 0._wp
      ENDIF
   END SUBROUTINE dyn_init


   SUBROUTINE dyn_tend( pu, pv, ph, pua, pva, pha )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE dyn_tend  ***
      !! ** Purpose :   tendencies of all layers on the inner points, from fields
      !!                whose halo is valid
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(jpi,jpj,jpk), INTENT(in ) ::   pu, pv, ph      ! now fields
      REAL(wp), DIMENSION(jpi,jpj,jpk), INTENT(out) ::   pua, pva, pha   ! tendencies
      INTEGER  ::   ji, jj, jk
      REAL(wp) ::   zgn, zr1_rho0
      !!------------------------------------------------------------------
      zgn = rn_gprime / REAL(jpk, wp)
      zr1_rho0 = 1._wp / rn_rho0

      ! --- pressure: S_k = sum_{j<=k} h_j down, then P_k = P_k+1 + g'/N S_k up --- !
      zp(:,:,1) = ph(:,:,1)
      DO jk = 2, jpk
         DO jj = 1, jpj
            DO ji = 1, jpi
               zp(ji,jj,jk) = zp(ji,jj,jk-1) + ph(ji,jj,jk)
            END DO
         END DO
      END DO
      zp(:,:,jpk) = zgn * zp(:,:,jpk)
      DO jk = jpk-1, 1, -1
         DO jj = 1, jpj
            DO ji = 1, jpi
               zp(ji,jj,jk) = zp(ji,jj,jk+1) + zgn * zp(ji,jj,jk)
            END DO
         END DO
      END DO

      ! --- biharmonic: first Laplacian of every layer, its halo, then the second below --- !
      IF( rn_bhm > 0._wp ) THEN
         DO jk = 1, jpk
            zlu(:,:,jk) = 0._wp   ;   zlv(:,:,jk) = 0._wp
            CALL ldf_lap( pu(:,:,jk), pv(:,:,jk), zlu(:,:,jk), zlv(:,:,jk), 1._wp )
         END DO
         CALL lbc_lnk( zlu, zlv )
      ENDIF

      DO jk = 1, jpk
         ! mass fluxes (centred thickness), Bernoulli function, potential vorticity
         DO jj = 1, jpj
            DO ji = 1, jpi-1
               zUf(ji,jj) = e2u(ji,jj) * 0.5_wp * ( ph(ji,jj,jk) + ph(ji+1,jj,jk) ) * pu(ji,jj,jk)
            END DO
         END DO
         DO jj = 1, jpj-1
            DO ji = 1, jpi
               zVf(ji,jj) = e1v(ji,jj) * 0.5_wp * ( ph(ji,jj,jk) + ph(ji,jj+1,jk) ) * pv(ji,jj,jk)
            END DO
         END DO
         DO jj = 2, jpj
            DO ji = 2, jpi
               zB(ji,jj) = zp(ji,jj,jk) + 0.25_wp * (  pu(ji-1,jj,jk) * pu(ji-1,jj,jk) + pu(ji,jj,jk) * pu(ji,jj,jk)   &
                  &                                  + pv(ji,jj-1,jk) * pv(ji,jj-1,jk) + pv(ji,jj,jk) * pv(ji,jj,jk)  )
            END DO
         END DO
         DO jj = 1, jpj-1
            DO ji = 1, jpi-1
               zq(ji,jj) = (  ff_f(ji,jj) + fmask(ji,jj) * r1_e1e2f(ji,jj)                                   &
                  &         * (  e2v(ji+1,jj) * pv(ji+1,jj,jk) - e2v(ji,jj) * pv(ji,jj,jk)                  &
                  &            - e1u(ji,jj+1) * pu(ji,jj+1,jk) + e1u(ji,jj) * pu(ji,jj,jk)  )  )            &
                  &      / (  ( ph(ji,jj,jk) + ph(ji+1,jj,jk) + ph(ji,jj+1,jk) + ph(ji+1,jj+1,jk) ) * r1_nf(ji,jj)   &
                  &         + rland_f(ji,jj)  )
            END DO
         END DO

         ! vorticity flux (ENE) - grad(P + K); continuity
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               pua(ji,jj,jk) = umask(ji,jj) * r1_e1u(ji,jj) * (                                               &
                  &              0.25_wp * (  zq(ji,jj-1) * ( zVf(ji,jj-1) + zVf(ji+1,jj-1) )                    &
                  &                         + zq(ji,jj  ) * ( zVf(ji,jj  ) + zVf(ji+1,jj  ) )  )                 &
                  &            - ( zB(ji+1,jj) - zB(ji,jj) )  )
               pva(ji,jj,jk) = vmask(ji,jj) * r1_e2v(ji,jj) * (                                               &
                  &            - 0.25_wp * (  zq(ji-1,jj) * ( zUf(ji-1,jj) + zUf(ji-1,jj+1) )                    &
                  &                         + zq(ji  ,jj) * ( zUf(ji  ,jj) + zUf(ji  ,jj+1) )  )                 &
                  &            - ( zB(ji,jj+1) - zB(ji,jj) )  )
               pha(ji,jj,jk) = - tmask(ji,jj) * r1_e1e2t(ji,jj)                                               &
                  &            * ( zUf(ji,jj) - zUf(ji-1,jj) + zVf(ji,jj) - zVf(ji,jj-1) )
            END DO
         END DO

         ! thickness diffusion: eddy-induced volume flux -aeiv grad h, none through walls
         IF( rn_aeiv > 0._wp ) THEN
            DO jj = 2, jpj-1
               DO ji = 2, jpi-1
                  pha(ji,jj,jk) = pha(ji,jj,jk) + rn_aeiv * tmask(ji,jj) * r1_e1e2t(ji,jj) * (                     &
                     &              e2u(ji  ,jj) * r1_e1u(ji  ,jj) * umask(ji  ,jj) * ( ph(ji+1,jj,jk) - ph(ji  ,jj,jk) )   &
                     &            - e2u(ji-1,jj) * r1_e1u(ji-1,jj) * umask(ji-1,jj) * ( ph(ji  ,jj,jk) - ph(ji-1,jj,jk) )   &
                     &            + e1v(ji,jj  ) * r1_e2v(ji,jj  ) * vmask(ji,jj  ) * ( ph(ji,jj+1,jk) - ph(ji,jj  ,jk) )   &
                     &            - e1v(ji,jj-1) * r1_e2v(ji,jj-1) * vmask(ji,jj-1) * ( ph(ji,jj  ,jk) - ph(ji,jj-1,jk) )  )
               END DO
            END DO
         ENDIF

         ! lateral viscosity
         IF( rn_ahm > 0._wp )   CALL ldf_lap( pu(:,:,jk), pv(:,:,jk), pua(:,:,jk), pva(:,:,jk), rn_ahm )
         IF( rn_bhm > 0._wp )   CALL ldf_lap( zlu(:,:,jk), zlv(:,:,jk), pua(:,:,jk), pva(:,:,jk), -rn_bhm )

         ! wind stress as a body force on the top layer
         IF( jk == 1 ) THEN
            DO jj = 2, jpj-1
               DO ji = 2, jpi-1
                  pua(ji,jj,1) = pua(ji,jj,1) + utau(ji,jj) * zr1_rho0   &
                     &                        / MAX( 0.5_wp * ( ph(ji,jj,1) + ph(ji+1,jj,1) ), rn_hmin )
               END DO
            END DO
         ENDIF
         ! linear drag on the deepest layer
         IF( jk == jpk .AND. rn_rfr > 0._wp ) THEN
            DO jj = 2, jpj-1
               DO ji = 2, jpi-1
                  pua(ji,jj,jk) = pua(ji,jj,jk) - rn_rfr * pu(ji,jj,jk)
                  pva(ji,jj,jk) = pva(ji,jj,jk) - rn_rfr * pv(ji,jj,jk)
               END DO
            END DO
         ENDIF
      END DO

   END SUBROUTINE dyn_tend

   !!======================================================================
END MODULE dyn
