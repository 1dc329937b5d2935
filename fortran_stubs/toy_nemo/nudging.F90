MODULE nudging
   !!======================================================================
   !!                       ***  MODULE  nudging  ***
   !! toy_nemo :  Newtonian relaxation (nudging) of u, v, h toward a given
   !!             "truth" trajectory (&namnudge), for bias-correction twins
   !!======================================================================
   !!   nud_init : read &namnudge (ref then cfg), check it, open cn_nudge_in
   !!              (rank 0), check its grid, read its kt, broadcast them
   !!   nud_step : after the AB3 update of step kt, relax u, v, h toward the
   !!              truth of step kt
   !!   nud_mean : the nudging tendency averaged since the last call (diawri)
   !!   nud_last : the nudging tendency of the last step (infmod: a training
   !!              target the model sends, u_nud, v_nud, h_nud)
   !!----------------------------------------------------------------------
   !! Truth: cn_nudge_in is a *_grid.nc of the same grid (u, v, h as netCDF
   !! (record, z, y, x), land rim included, and kt(record)). The truth of
   !! step kt (the state at the end of step kt, as diawri writes it) is the
   !! linear interpolation in kt between the two bracketing records; a kt
   !! outside the records stops the run (naming the file and kt).
   !! Tendency, applied after the AB3 update x* (and after the external
   !! tendencies), by forward Euler as the external tendencies are:
   !!    x(n+1) = x* + dt * T_nud ,   T_nud = ( x_truth(kt) - x* ) / rn_nudge_tau
   !! so rn_nudge_tau = rn_Dt gives x(n+1) = x_truth(kt) to round-off.
   !! Units: u, v [m s-2], h [m s-1]. Rank 0 reads, iom_scatter distributes:
   !! any decomposition gives the same numbers bit for bit.
   !! ln_nudge = .false. (default): nothing is read, nothing changes.
   !! ln_nudge_frc = .true. (with ln_nudge): no relaxation, a constant forcing
   !! instead (the "mean nudging tendency" baseline of the bias twin): record 1
   !! of cn_nudge_in's nudge_u, nudge_v, nudge_h is added every step,
   !!    x(n+1) = x* + dt * F ,   F = nudge_x(record 1) on the ocean points
   !! (kt and rn_nudge_tau are not used).
   !!----------------------------------------------------------------------
   USE mpi_f08       , ONLY : MPI_Bcast, MPI_INTEGER
   USE netcdf
   USE par_kind      , ONLY : wp, lc
   USE lib_mpp       , ONLY : mpi_comm_oce, lwp, numout, ctl_stop, ctl_nam, nam_open
   USE mppini        , ONLY : jpi, jpj, jpiglo, jpjglo
   USE domain        , ONLY : rn_Dt, umask, vmask, tmask
   USE iom           , ONLY : iom_scatter, iom_check

   IMPLICIT NONE
   PRIVATE

   PUBLIC   nud_init   ! called by nemogcm
   PUBLIC   nud_step   ! called by step (after the AB3 update)
   PUBLIC   nud_mean   ! called by diawri
   PUBLIC   nud_last   ! called by infmod (inf_put) and rst (rst_write)
   PUBLIC   nud_rst_set   ! called by rst (rst_read): the last tendency of the restarted run

   !                                                  !!* namnudge *
   LOGICAL          , PUBLIC ::   ln_nudge     = .FALSE.          !: relax u, v, h toward cn_nudge_in
   CHARACTER(len=lc), PUBLIC ::   cn_nudge_in  = 'nudge_grid.nc'  !: truth trajectory (*_grid.nc)
   REAL(wp)         , PUBLIC ::   rn_nudge_tau = 432000._wp       !: relaxation time scale [s]
   LOGICAL          , PUBLIC ::   ln_nudge_frc = .FALSE.          !: constant forcing nudge_* of cn_nudge_in instead

   INTEGER, PARAMETER ::   jpvar = 3
   CHARACTER(len=7), DIMENSION(jpvar) ::   cvin = [ 'u      ', 'v      ', 'h      ' ]   ! read from cn_nudge_in

   INTEGER ::   npk = 0                           ! number of layers
   INTEGER ::   ncid = -1                         ! cn_nudge_in (rank 0)
   INTEGER, DIMENSION(jpvar) ::   idvar = -1      ! its u, v, h (rank 0)
   INTEGER ::   nrec = 0                          ! its records
   INTEGER, ALLOCATABLE, DIMENSION(:) ::   nkt    ! kt of each record (every rank)
   INTEGER, DIMENSION(2) ::   nheld = -1          ! records held in slots 1 and 2
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:,:,:) ::   ztru   ! (jpi, jpj, jpk, jpvar, 2) held records
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:,:)   ::   zsum   ! (jpi, jpj, jpk, jpvar) tendency summed since nud_mean
   INTEGER ::   nsum = 0                          ! steps summed in zsum
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:,:)   ::   zlast  ! (jpi, jpj, jpk, jpvar) tendency of the last nud_step
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zglo   ! global read buffer (rank 0)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE nud_init( kpk, ld_tend )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nud_init  ***
      !! ** Purpose :   read and check &namnudge; with ln_nudge, open the truth
      !!                file on rank 0, check its grid and its kt, broadcast kt
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kpk       ! number of layers
      LOGICAL, INTENT(in) ::   ld_tend   ! offline tendency mode (&namtend): no time step
      INTEGER ::   inum, ios, ii, jv, idim, ilen, ndims, irec
      INTEGER, DIMENSION(4) ::   idims
      INTEGER, DIMENSION(3) ::   iglo
      CHARACTER(len=1), DIMENSION(3), PARAMETER ::   cdim = [ 'x', 'y', 'z' ]
      CHARACTER(len=lc) ::   cmsg, cname
      NAMELIST/namnudge/ ln_nudge, cn_nudge_in, rn_nudge_tau, ln_nudge_frc
      !!------------------------------------------------------------------
      npk = kpk
      cmsg = ''
      CALL nam_open( 'namelist_ref', inum )
      READ( inum, namnudge, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namnudge', 'namelist_ref', inum )
      CALL nam_open( 'namelist_cfg', inum )
      READ( inum, namnudge, IOSTAT=ios, IOMSG=cmsg )
      CALL ctl_nam( ios, cmsg, 'namnudge', 'namelist_cfg', inum )
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) 'nud_init : nudging toward a truth trajectory (&namnudge)'
         WRITE(numout,*) '~~~~~~~~'
         WRITE(numout,'(a,l10)') '   relax u, v, h                 ln_nudge     = ', ln_nudge
         IF( ln_nudge ) THEN
            WRITE(numout,'(a,a)')     '   truth trajectory              cn_nudge_in  = ', TRIM(cn_nudge_in)
            WRITE(numout,'(a,es12.5)') '   time scale [s]                rn_nudge_tau = ', rn_nudge_tau
            WRITE(numout,'(a,l10)')    '   constant forcing instead      ln_nudge_frc = ', ln_nudge_frc
         ENDIF
      ENDIF
      IF( .NOT. ln_nudge )   RETURN

      IF( ld_tend )   CALL ctl_stop( 'namnudge: ln_nudge = .true. needs namtend ln_tend = .false. '   &
         &                           //'(no time step to nudge)', ld_all=.TRUE. )
      IF( LEN_TRIM(cn_nudge_in) == 0 )   CALL ctl_stop( 'namnudge: cn_nudge_in is empty', ld_all=.TRUE. )
      IF( ln_nudge_frc )   cvin = [ 'nudge_u', 'nudge_v', 'nudge_h' ]
      IF( .NOT. rn_nudge_tau > 0._wp ) THEN
         WRITE(cmsg,'(a,es12.5,a)') 'namnudge: rn_nudge_tau = ', rn_nudge_tau, ' s must be > 0'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF

      IF( lwp ) THEN
         ALLOCATE( zglo(jpiglo,jpjglo,kpk) )
         CALL iom_check( nf90_open( cn_nudge_in, NF90_NOWRITE, ncid ),   &
            &            'nudging: namnudge cn_nudge_in: cannot open '//TRIM(cn_nudge_in) )
         iglo = [ jpiglo, jpjglo, kpk ]
         DO ii = 1, 3
            CALL chk( nf90_inq_dimid( ncid, cdim(ii), idim ) )
            CALL chk( nf90_inquire_dimension( ncid, idim, len=ilen ) )
            IF( ilen /= iglo(ii) ) THEN
               WRITE(cmsg,'(a,a,a,i0,a,a,a,i0,a)') 'nudging: ', TRIM(cn_nudge_in), ' has ', ilen, ' points in ',   &
                  &   cdim(ii), ' where this run (&namusr_def) has ', iglo(ii), ': not the same grid'
               CALL ctl_stop( cmsg )
            ENDIF
         END DO
         DO jv = 1, jpvar
            CALL iom_check( nf90_inq_varid( ncid, TRIM(cvin(jv)), idvar(jv) ),   &
               &            'nudging: '//TRIM(cn_nudge_in)//' has no variable '//TRIM(cvin(jv)) )
            CALL chk( nf90_inquire_variable( ncid, idvar(jv), ndims=ndims ) )
            IF( ndims /= 4 ) THEN
               WRITE(cmsg,'(a,a,a,i0,a)') 'nudging: '//TRIM(cn_nudge_in)//': variable ', TRIM(cvin(jv)), ' has ', ndims,   &
                  &                      ' dimensions, expected 4 (record, z, y, x)'
               CALL ctl_stop( cmsg )
            ENDIF
            CALL chk( nf90_inquire_variable( ncid, idvar(jv), dimids=idims ) )
            DO ii = 1, 3
               CALL chk( nf90_inquire_dimension( ncid, idims(ii), name=cname ) )
               IF( TRIM(cname) /= cdim(ii) ) THEN
                  WRITE(cmsg,'(a)') 'nudging: '//TRIM(cn_nudge_in)//': '//TRIM(cvin(jv))//' has dimension '   &
                     &              //TRIM(cname)//' where (record, z, y, x) needs '//cdim(ii)
                  CALL ctl_stop( cmsg )
               ENDIF
            END DO
         END DO
         CALL chk( nf90_inquire_dimension( ncid, idims(4), len=nrec ) )
         IF( nrec < 1 )   CALL ctl_stop( 'nudging: '//TRIM(cn_nudge_in)//' has no record' )
      ENDIF
      CALL MPI_Bcast( nrec, 1, MPI_INTEGER, 0, mpi_comm_oce )
      ALLOCATE( nkt(nrec) )
      IF( lwp ) THEN
         CALL chk( nf90_inq_varid( ncid, 'kt', ii ) )
         CALL chk( nf90_get_var( ncid, ii, nkt ) )
         DO irec = 2, nrec
            IF( nkt(irec) <= nkt(irec-1) ) THEN
               WRITE(cmsg,'(a,i0,a,i0,a,i0)') 'nudging: '//TRIM(cn_nudge_in)//': kt must increase, record ', irec,   &
                  &                           ' has kt = ', nkt(irec), ' after ', nkt(irec-1)
               CALL ctl_stop( cmsg )
            ENDIF
         END DO
         WRITE(numout,'(a,i0,a,i0,a,i0)') '   records ', nrec, ' from kt = ', nkt(1), ' to kt = ', nkt(nrec)
         FLUSH(numout)
      ELSE
         ALLOCATE( zglo(1,1,1) )
      ENDIF
      CALL MPI_Bcast( nkt, nrec, MPI_INTEGER, 0, mpi_comm_oce )
      ALLOCATE( ztru(jpi,jpj,kpk,jpvar,2), zsum(jpi,jpj,kpk,jpvar) )
      ztru(:,:,:,:,:) = 0._wp
      IF( .NOT. ALLOCATED(zlast) ) THEN   ! else given back by rst_read (nud_rst_set)
         ALLOCATE( zlast(jpi,jpj,kpk,jpvar) )
         zlast(:,:,:,:) = 0._wp
      ENDIF
      zsum(:,:,:,:) = 0._wp
      nsum = 0
   END SUBROUTINE nud_init


   SUBROUTINE nud_step( kt, pu, pv, ph )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nud_step  ***
      !! ** Purpose :   x = x + dt ( x_truth(kt) - x ) / tau on the inner points
      !!                (collective when a new record is read)
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in   ) ::   kt           ! time step just updated
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pu, pv, ph   ! u, v, h after the AB3 update
      INTEGER  ::   ir, ji, jj, jk
      REAL(wp) ::   zw, zt, zrtau
      LOGICAL  ::   llint                       ! between two records: interpolate
      CHARACTER(len=lc) ::   cmsg
      !!------------------------------------------------------------------
      IF( .NOT. ln_nudge )   RETURN
      IF( ln_nudge_frc ) THEN
         CALL nud_force( pu, pv, ph )
         RETURN
      ENDIF
      IF( kt < nkt(1) .OR. kt > nkt(nrec) ) THEN   ! same answer on every rank
         WRITE(cmsg,'(a,i0,a,i0,a,i0,a)') 'nudging: step kt = ', kt, ' is outside the records of '   &
            &   //TRIM(cn_nudge_in)//' (kt = ', nkt(1), ' to ', nkt(nrec), ')'
         CALL ctl_stop( cmsg, ld_all=.TRUE. )
      ENDIF
      ir = 1                                    ! bracketing records ir, ir+1 (or ir alone at the last)
      DO WHILE( ir < nrec )
         IF( nkt(ir+1) >= kt )   EXIT
         ir = ir + 1
      END DO
      IF( nkt(ir) == kt .OR. ir == nrec ) THEN
         CALL nud_load( ir, 1 )   ;   zw = 0._wp   ;   llint = .FALSE.
      ELSE
         CALL nud_load( ir, 1 )   ;   CALL nud_load( ir+1, 2 )
         zw = REAL( kt - nkt(ir), wp ) / REAL( nkt(ir+1) - nkt(ir), wp )   ;   llint = .TRUE.
      ENDIF
      zrtau = 1._wp / rn_nudge_tau
      DO jk = 1, npk
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               zt = ztru(ji,jj,jk,1,1)
               IF( llint )   zt = zt + zw * ( ztru(ji,jj,jk,1,2) - zt )
               zt = ( zt - pu(ji,jj,jk) ) * zrtau * umask(ji,jj)
               zsum(ji,jj,jk,1) = zsum(ji,jj,jk,1) + zt
               zlast(ji,jj,jk,1) = zt
               pu(ji,jj,jk) = ( pu(ji,jj,jk) + rn_Dt * zt ) * umask(ji,jj)
               zt = ztru(ji,jj,jk,2,1)
               IF( llint )   zt = zt + zw * ( ztru(ji,jj,jk,2,2) - zt )
               zt = ( zt - pv(ji,jj,jk) ) * zrtau * vmask(ji,jj)
               zsum(ji,jj,jk,2) = zsum(ji,jj,jk,2) + zt
               zlast(ji,jj,jk,2) = zt
               pv(ji,jj,jk) = ( pv(ji,jj,jk) + rn_Dt * zt ) * vmask(ji,jj)
               zt = ztru(ji,jj,jk,3,1)
               IF( llint )   zt = zt + zw * ( ztru(ji,jj,jk,3,2) - zt )
               zt = ( zt - ph(ji,jj,jk) ) * zrtau * tmask(ji,jj)
               zsum(ji,jj,jk,3) = zsum(ji,jj,jk,3) + zt
               zlast(ji,jj,jk,3) = zt
               ph(ji,jj,jk) = ( ph(ji,jj,jk) + rn_Dt * zt ) * tmask(ji,jj)
            END DO
         END DO
      END DO
      nsum = nsum + 1
   END SUBROUTINE nud_step


   SUBROUTINE nud_mean( pu, pv, ph )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nud_mean  ***
      !! ** Purpose :   nudging tendency averaged over the steps since the last
      !!                call (zero if none), then restart the average
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), INTENT(out) ::   pu, pv, ph   ! [m s-2], [m s-2], [m s-1]
      REAL(wp) ::   zr
      !!------------------------------------------------------------------
      pu(:,:,:) = 0._wp   ;   pv(:,:,:) = 0._wp   ;   ph(:,:,:) = 0._wp
      IF( .NOT. ln_nudge .OR. nsum == 0 )   RETURN
      zr = 1._wp / REAL( nsum, wp )
      pu(:,:,:) = zsum(:,:,:,1) * zr
      pv(:,:,:) = zsum(:,:,:,2) * zr
      ph(:,:,:) = zsum(:,:,:,3) * zr
      zsum(:,:,:,:) = 0._wp
      nsum = 0
   END SUBROUTINE nud_mean


   SUBROUTINE nud_last( kvar, pf )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nud_last  ***
      !! ** Purpose :   the nudging tendency of variable kvar (1 u, 2 v, 3 h) of
      !!                the last nud_step; zero before the first and without
      !!                ln_nudge. Sent at the next inf_put, it pairs with the
      !!                state x(kt) it produced: T = ( x_truth - x(kt) ) / ( tau - dt )
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in ) ::   kvar
      REAL(wp), DIMENSION(:,:,:), INTENT(out) ::   pf   ! [m s-2] (u, v), [m s-1] (h)
      !!------------------------------------------------------------------
      pf(:,:,:) = 0._wp
      IF( .NOT. ALLOCATED(zlast) )   RETURN
      pf(:,:,:) = zlast(:,:,1:SIZE(pf,3),kvar)
   END SUBROUTINE nud_last


   SUBROUTINE nud_rst_set( kvar, pf )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nud_rst_set  ***
      !! ** Purpose :   rst_read (before nud_init): the nudging tendency of the
      !!                restart's last step, so that the first inf_put of the
      !!                restarted run sends what the run in one go sends
      !!------------------------------------------------------------------
      INTEGER                   , INTENT(in) ::   kvar
      REAL(wp), DIMENSION(:,:,:), INTENT(in) ::   pf
      !!------------------------------------------------------------------
      IF( .NOT. ALLOCATED(zlast) ) THEN
         ALLOCATE( zlast(SIZE(pf,1),SIZE(pf,2),SIZE(pf,3),jpvar) )
         zlast(:,:,:,:) = 0._wp
      ENDIF
      zlast(:,:,:,kvar) = pf(:,:,:)
   END SUBROUTINE nud_rst_set

   !!----------------------------------------------------------------------
   !!                          private routines
   !!----------------------------------------------------------------------

   SUBROUTINE nud_force( pu, pv, ph )
      !!------------------------------------------------------------------
      !! x = x + dt F on the inner points, F = record 1 of nudge_u, nudge_v,
      !! nudge_h (ln_nudge_frc; read once, collective then)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pu, pv, ph
      INTEGER  ::   ji, jj, jk
      REAL(wp) ::   zt
      !!------------------------------------------------------------------
      CALL nud_load( 1, 1 )
      DO jk = 1, npk
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               zt = ztru(ji,jj,jk,1,1) * umask(ji,jj)
               zsum(ji,jj,jk,1) = zsum(ji,jj,jk,1) + zt
               pu(ji,jj,jk) = ( pu(ji,jj,jk) + rn_Dt * zt ) * umask(ji,jj)
               zt = ztru(ji,jj,jk,2,1) * vmask(ji,jj)
               zsum(ji,jj,jk,2) = zsum(ji,jj,jk,2) + zt
               pv(ji,jj,jk) = ( pv(ji,jj,jk) + rn_Dt * zt ) * vmask(ji,jj)
               zt = ztru(ji,jj,jk,3,1) * tmask(ji,jj)
               zsum(ji,jj,jk,3) = zsum(ji,jj,jk,3) + zt
               ph(ji,jj,jk) = ( ph(ji,jj,jk) + rn_Dt * zt ) * tmask(ji,jj)
            END DO
         END DO
      END DO
      nsum = nsum + 1
   END SUBROUTINE nud_force


   SUBROUTINE nud_load( krec, kslot )
      !!------------------------------------------------------------------
      !! record krec of cn_nudge_in into slot kslot (collective; no-op when held;
      !! taken from the other slot when it holds it)
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   krec, kslot
      INTEGER ::   jv, iother
      !!------------------------------------------------------------------
      IF( nheld(kslot) == krec )   RETURN
      iother = 3 - kslot
      IF( nheld(iother) == krec ) THEN
         ztru(:,:,:,:,kslot) = ztru(:,:,:,:,iother)
      ELSE
         DO jv = 1, jpvar
            IF( lwp )   CALL chk( nf90_get_var( ncid, idvar(jv), zglo, start=[1,1,1,krec], count=[jpiglo,jpjglo,npk,1] ) )
            CALL iom_scatter( npk, zglo, ztru(:,:,:,jv,kslot) )
         END DO
      ENDIF
      nheld(kslot) = krec
   END SUBROUTINE nud_load


   SUBROUTINE chk( kstatus )
      INTEGER, INTENT(in) ::   kstatus
      CALL iom_check( kstatus, 'nudging: read '//TRIM(cn_nudge_in) )
   END SUBROUTINE chk

   !!======================================================================
END MODULE nudging
