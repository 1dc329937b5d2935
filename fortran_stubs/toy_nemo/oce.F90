MODULE oce
   !!======================================================================
   !!                         ***  MODULE  oce  ***
   !! toy_nemo :  the prognostic state and its AB3 tendency history
   !!======================================================================
   !!   oce_alloc : allocate the state (zero: ocean at rest until istate/rst)
   !!----------------------------------------------------------------------
   !! Who writes what:
   !!   un, vn, hn         : nemogcm (initial state), rst_read, step (dyn_nxt)
   !!   uta, vta, hta      : dyn_tend writes slot nnow; step rotates the slots
   !!   u_tend, v_tend, h_tend : inf_get (external tendencies, zero without coupling)
   !!   nab, nnow, nm1, nm2: step, rst_read
   !!----------------------------------------------------------------------
   USE par_kind, ONLY : wp

   IMPLICIT NONE
   PRIVATE

   PUBLIC   oce_alloc   ! called by nemogcm

   INTEGER, PUBLIC ::   jpk                  !: number of layers (nn_nz)
   !                                         !!* prognostic fields (jpi, jpj, jpk)
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:) ::   un   !: velocity at U points [m s-1]
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:) ::   vn   !: velocity at V points [m s-1]
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:) ::   hn   !: layer thickness at T points [m]
   !                                         !!* tendencies of the last 3 steps (jpi, jpj, jpk, 3)
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:,:) ::   uta, vta, hta
   INTEGER , PUBLIC ::   nnow = 1, nm1 = 2, nm2 = 3   !: slot of the tendency of step n, n-1, n-2
   INTEGER , PUBLIC ::   nab  = 0                     !: previous tendencies available (0, 1 or 2)
   !                                         !!* external tendencies from the coupling hook
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:) ::   u_tend   !: [m s-2]
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:) ::   v_tend   !: [m s-2]
   REAL(wp), PUBLIC, ALLOCATABLE, DIMENSION(:,:,:) ::   h_tend   !: [m s-1]

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE oce_alloc( kpi, kpj, kpk )
      INTEGER, INTENT(in) ::   kpi, kpj, kpk   ! local sizes, halo included
      jpk = kpk
      ALLOCATE( un(kpi,kpj,kpk), vn(kpi,kpj,kpk), hn(kpi,kpj,kpk) )
      ALLOCATE( uta(kpi,kpj,kpk,3), vta(kpi,kpj,kpk,3), hta(kpi,kpj,kpk,3) )
      ALLOCATE( u_tend(kpi,kpj,kpk), v_tend(kpi,kpj,kpk), h_tend(kpi,kpj,kpk) )
      un (:,:,:) = 0._wp   ;   vn (:,:,:) = 0._wp     ;   hn (:,:,:) = 0._wp
      uta(:,:,:,:) = 0._wp ;   vta(:,:,:,:) = 0._wp   ;   hta(:,:,:,:) = 0._wp
      u_tend(:,:,:) = 0._wp ;  v_tend(:,:,:) = 0._wp  ;   h_tend(:,:,:) = 0._wp
   END SUBROUTINE oce_alloc

   !!======================================================================
END MODULE oce
